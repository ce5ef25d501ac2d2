//! Unit tests of the scenario format: expansion, the checks' messages, per-plugin expectations,
//! and the scenarios shipped in `tests/scenarios`.

use std::path::Path;

use super::loading::ScenarioError;
use super::*;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError(e.to_string()))?;
    s.name = "t".into();
    s.file = PathBuf::from("t.toml");
    s.check()?;
    Ok(s)
}

const BASE: &str = r#"
        title = "t"
        [resources]
        disk = { disk = "vm.img" }
        many = { disk = "d-{i}.img", count = 5, mode = "shared" }
        [owners]
        a = ["disk", "many"]
        b = ["many[1..3]"]
    "#;

const REGISTER_A: &str = "\n[[steps]]\ndo = \"register\"\nowner = \"a\"\n\n";

#[test]
fn counted_resources_expand_and_slice() {
    let s = parse(&format!(
        "{BASE}\n[[steps]]\ndo = \"register\"\nowner = \"a\"\n"
    ))
    .unwrap();
    let a = s.owner_resources("a").unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(a[1].name, "many[0]");
    assert_eq!(a[1].disk.as_deref(), Some("d-000.img"));
    assert_eq!(a[1].mode, Mode::Shared);
    let b = s.owner_resources("b").unwrap();
    assert_eq!(
        b.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["many[1]", "many[2]"]
    );
    assert_eq!(s.resolve("many[4]").unwrap().len(), 1);
    assert!(s.resolve("many[5]").is_err());
    assert!(s.resolve("disk[0]").is_err());
}

#[test]
fn mistakes_are_named_with_the_step() {
    let bad_owner = parse(&format!(
        "{BASE}\n[[steps]]\ndo = \"acquire\"\nowner = \"zz\"\n"
    ))
    .unwrap_err();
    assert!(
        bad_owner.0.contains("step 1 (acquire by zz)"),
        "{bad_owner}"
    );
    let no_refusal = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nerror = \"busy\"\n"
    ))
    .unwrap_err();
    assert!(
        no_refusal.0.contains("expect = \"refused\""),
        "{no_refusal}"
    );
    let hotplug = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"hotplug\"\nowner = \"a\"\n"
    ))
    .unwrap_err();
    assert!(hotplug.0.contains("needs resources"), "{hotplug}");
    let unknown_field = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nexpects = \"ok\"\n"
    ))
    .unwrap_err();
    assert!(unknown_field.0.contains("expects"), "{unknown_field}");
    let profile = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nby_plugin.lockdd = {{ expect = \"refused\", why = \"x\" }}\n"
    ))
    .unwrap_err();
    assert!(profile.0.contains("unknown plugin profile"), "{profile}");
    let unregistered = parse(&format!(
        "{BASE}\n[[steps]]\ndo = \"acquire\"\nowner = \"a\"\n"
    ))
    .unwrap_err();
    assert!(
        unregistered.0.contains("before its register step"),
        "{unregistered}"
    );
    let across_alone = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nacross_nodes_within_ms = 500\n"
    ))
    .unwrap_err();
    assert!(
        across_alone
            .0
            .contains("step 2 (acquire by a): across_nodes_within_ms needs within_ms"),
        "{across_alone}"
    );
    let across_below = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nwithin_ms = 100\nacross_nodes_within_ms = 50\n"
    ))
    .unwrap_err();
    assert!(
        across_below.0.contains("is below within_ms"),
        "{across_below}"
    );
}

#[test]
fn per_plugin_expectations_override_the_default() {
    let s = parse(&format!(
        "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nexpect = \"refused\"\n\
         by_plugin.lockd = {{ expect = \"granted\", why = \"drops locks\" }}\n"
    ))
    .unwrap();
    assert_eq!(s.steps[1].expectation("file"), (Expect::Refused, None));
    assert_eq!(
        s.steps[1].expectation("lockd"),
        (Expect::Ok, Some("drops locks".into()))
    );
}

#[test]
fn the_shipped_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let scenarios = load_dir(&dir).unwrap();
    assert!(scenarios.len() >= 13, "{} scenarios", scenarios.len());
}
