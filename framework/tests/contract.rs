//! The export macro's guard and decoding, driven in-process through the host API: what a plugin
//! sees of libvirt's calls, and what libvirt sees of a plugin's errors and panics.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use lockmgr::host::{HostError, Plugin, RawParam};
use lockmgr::{
    Access, AcquireFlags, AcquireRequest, Acquired, Domain, Error, InitArgs, Lease, LockDriver,
    LockFailureAction, NewFlags, Resource, Result, Uuid,
};

/// What the recording driver saw, for assertions.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Managers alive: New adds one, Free removes one.
static LIVE_MANAGERS: AtomicIsize = AtomicIsize::new(0);

struct Recorder;

struct Context {
    domain: Domain,
    resources: Vec<Resource>,
}

impl Drop for Context {
    fn drop(&mut self) {
        LIVE_MANAGERS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn record(line: String) {
    SEEN.lock().unwrap().push(line);
}

impl LockDriver for Recorder {
    type Manager = Context;
    const USES_STATE: bool = true;

    fn init(_args: &InitArgs) -> Result<Self> {
        Ok(Recorder)
    }

    fn new_manager(&self, domain: Domain, flags: NewFlags) -> Result<Context> {
        if domain.name == "refuse-me" {
            return Err(Error::config("domain refused by test driver"));
        }
        record(format!(
            "new {} started={} {:?}",
            domain.name, flags.started, domain
        ));
        LIVE_MANAGERS.fetch_add(1, Ordering::SeqCst);
        Ok(Context {
            domain,
            resources: Vec::new(),
        })
    }

    fn add_resource(&self, manager: &mut Context, resource: Resource) -> Result<()> {
        if manager.domain.name == "panic-in-add" {
            panic!("deliberate panic for {}", manager.domain.name);
        }
        manager.resources.push(resource);
        Ok(())
    }

    fn acquire(&self, manager: &mut Context, request: &AcquireRequest<'_>) -> Result<Acquired> {
        record(format!(
            "acquire {} state={:?} flags={:?} action={:?} fd={} resources={:?}",
            manager.domain.name,
            request.state,
            request.flags,
            request.action,
            request.wants_fd,
            manager.resources
        ));
        Ok(Acquired::default())
    }

    fn release(&self, manager: &mut Context, wants_state: bool) -> Result<Option<String>> {
        Ok(wants_state.then(|| match manager.domain.name.as_str() {
            "markup-state" => "<lockstate>".to_owned(),
            name => format!("v1:{name}:{}", manager.resources.len()),
        }))
    }
}

lockmgr::export_lock_driver!(Recorder);

fn plugin() -> Plugin {
    let mut plugin = Plugin::from_static(&virLockDriverImpl, "recorder");
    plugin
        .init(Path::new("/nonexistent/qemu-recorder.conf"))
        .expect("init");
    plugin
}

fn domain(name: &str) -> Domain {
    Domain {
        uuid: Uuid::parse("c7a5fdbd-cdaf-9455-926a-d65c16db1809").unwrap(),
        name: name.into(),
        id: 7,
        pid: 4242,
        uri: Some("qemu:///system".into()),
    }
}

fn reported(err: HostError) -> (i32, String) {
    match err {
        HostError::Callback {
            reported: Some(r), ..
        } => (r.code, r.message),
        other => panic!("expected a reported callback error, got {other:?}"),
    }
}

fn seen_containing(needle: &str) -> Vec<String> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

#[test]
fn table_declares_uses_state_and_every_slot() {
    let plugin = plugin();
    assert!(plugin.missing_callbacks().is_empty());
    assert!(plugin.uses_state());
    assert_eq!(plugin.info().version, 1_000_000);
    assert_eq!(plugin.info().symbol_size, Some(72));
}

#[test]
fn new_decodes_libvirts_five_params() {
    let plugin = plugin();
    drop(
        plugin
            .new_manager(&domain("decode"), NewFlags { started: true })
            .unwrap(),
    );
    let lines = seen_containing("new decode");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("started=true"));
    assert!(lines[0].contains("c7a5fdbd-cdaf-9455-926a-d65c16db1809"));
    assert!(lines[0].contains("id: 7, pid: 4242, uri: Some(\"qemu:///system\")"));
    let mut no_uri = domain("decode-no-uri");
    no_uri.uri = None;
    drop(plugin.new_manager(&no_uri, NewFlags::default()).unwrap());
    assert!(seen_containing("new decode-no-uri")[0].contains("uri: None"));
}

fn five_params(name: &str) -> Vec<(String, RawParam)> {
    vec![
        ("uuid".into(), RawParam::Uuid(domain(name).uuid.0)),
        ("name".into(), RawParam::String(name.into())),
        ("id".into(), RawParam::UInt(1)),
        ("pid".into(), RawParam::UInt(99)),
        ("uri".into(), RawParam::CString(None)),
    ]
}

#[test]
fn new_refuses_unknown_keys_wrong_types_and_bad_objects() {
    let plugin = plugin();
    let mut unknown = five_params("x");
    unknown.push(("colour".into(), RawParam::String("blue".into())));
    let (code, message) = reported(plugin.new_manager_raw(&unknown, 0).unwrap_err());
    assert_eq!(code, 8, "VIR_ERR_INVALID_ARG");
    assert!(
        message.contains("unexpected domain param 'colour'"),
        "{message}"
    );

    let mut wrong_type = five_params("x");
    wrong_type[3] = ("pid".into(), RawParam::String("99".into()));
    let (_, message) = reported(plugin.new_manager_raw(&wrong_type, 0).unwrap_err());
    assert_eq!(message, "param 'pid' must be of type uint, not string");

    let mut unknown_type = five_params("x");
    unknown_type[2] = ("id".into(), RawParam::UnknownType(42));
    let (_, message) = reported(plugin.new_manager_raw(&unknown_type, 0).unwrap_err());
    assert_eq!(message, "param 'id' has unknown type 42");

    let mut placeholder = five_params("x");
    placeholder[0] = ("uuid".into(), RawParam::Uuid([0x11; 16]));
    let (_, message) = reported(plugin.new_manager_raw(&placeholder, 0).unwrap_err());
    assert!(message.contains("is not a valid UUID"), "{message}");

    let missing_pid: Vec<_> = five_params("x")
        .into_iter()
        .filter(|(k, _)| k != "pid")
        .collect();
    let (_, message) = reported(plugin.new_manager_raw(&missing_pid, 0).unwrap_err());
    assert_eq!(message, "missing 'pid' param for domain object");

    let (_, message) = reported(plugin.new_manager_raw(&five_params("x"), 0x8).unwrap_err());
    assert_eq!(message, "drvNew: unsupported flags 0x8");
}

#[test]
fn failed_new_stores_nothing_and_every_manager_is_freed() {
    let plugin = plugin();
    let (code, message) = reported(
        plugin
            .new_manager(&domain("refuse-me"), NewFlags::default())
            .unwrap_err(),
    );
    assert_eq!(
        (code, message.as_str()),
        (67, "domain refused by test driver")
    );
    for _ in 0..3 {
        let mut manager = plugin
            .new_manager(&domain("lifecycle"), NewFlags::default())
            .unwrap();
        manager
            .add_resource(&Resource::Disk {
                path: "/img".into(),
                access: Access::Exclusive,
            })
            .unwrap();
    }
    // Other tests run concurrently; wait for their managers too, bounded.
    for _ in 0..200 {
        if LIVE_MANAGERS.load(Ordering::SeqCst) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!(
        "{} managers never freed",
        LIVE_MANAGERS.load(Ordering::SeqCst)
    );
}

#[test]
fn resources_are_decoded_with_access_and_lease_params() {
    let plugin = plugin();
    let mut manager = plugin
        .new_manager(&domain("resources"), NewFlags::default())
        .unwrap();
    manager
        .add_resource(&Resource::Disk {
            path: "/a.img".into(),
            access: Access::Shared,
        })
        .unwrap();
    manager.add_resource_raw(0, b"/ro.img", &[], 3).unwrap();
    let lease = Lease {
        key: "mylease".into(),
        lockspace: Some("ls".into()),
        path: Some(PathBuf::from("/leases")),
        offset: Some(1_048_576),
    };
    manager
        .add_resource(&Resource::Lease {
            lease: lease.clone(),
            access: Access::Exclusive,
        })
        .unwrap();
    manager
        .acquire(
            Some("v1:old"),
            AcquireFlags {
                register_only: false,
                restrict: true,
            },
            LockFailureAction::Pause,
            true,
        )
        .unwrap();
    let line = &seen_containing("acquire resources")[0];
    assert!(line.contains("state=Some(\"v1:old\")"), "{line}");
    assert!(
        line.contains("restrict: true")
            && line.contains("action=Pause")
            && line.contains("fd=true"),
        "{line}"
    );
    assert!(line.contains("path: \"/a.img\", access: Shared"), "{line}");
    assert!(
        line.contains("path: \"/ro.img\", access: ReadOnly"),
        "{line}"
    );
    assert!(
        line.contains("offset: Some(1048576)") && line.contains("lockspace: Some(\"ls\")"),
        "{line}"
    );

    let (_, message) = reported(
        manager
            .add_resource_raw(
                0,
                b"/d.img",
                &[("path".into(), RawParam::String("/x".into()))],
                0,
            )
            .unwrap_err(),
    );
    assert!(
        message.contains("unexpected parameters for disk resource /d.img"),
        "{message}"
    );
    let (_, message) = reported(
        manager
            .add_resource_raw(
                1,
                b"k",
                &[("offset".into(), RawParam::String("0".into()))],
                0,
            )
            .unwrap_err(),
    );
    assert_eq!(message, "param 'offset' must be of type ulong, not string");
    let (_, message) = reported(manager.add_resource_raw(2, b"meta", &[], 0).unwrap_err());
    assert_eq!(message, "unknown resource type 2");
    let (_, message) = reported(manager.add_resource_raw(0, b"/e.img", &[], 4).unwrap_err());
    assert_eq!(message, "unsupported resource flags 0x4");
    let (_, message) = reported(manager.acquire_raw(None, 8, 0, false).unwrap_err());
    assert_eq!(message, "unsupported acquire flags 0x8");
    let (_, message) = reported(manager.acquire_raw(None, 0, 5, false).unwrap_err());
    assert_eq!(message, "unknown lock failure action 5");
}

#[test]
fn state_strings_are_malloced_and_markup_is_refused() {
    let plugin = plugin();
    let mut manager = plugin
        .new_manager(&domain("stateful"), NewFlags::default())
        .unwrap();
    manager
        .add_resource(&Resource::Disk {
            path: "/s.img".into(),
            access: Access::Exclusive,
        })
        .unwrap();
    assert_eq!(
        manager.release(true).unwrap().as_deref(),
        Some("v1:stateful:1")
    );
    assert_eq!(
        manager.release(false).unwrap(),
        None,
        "no state pointer, no state"
    );

    let mut bad = plugin
        .new_manager(&domain("markup-state"), NewFlags::default())
        .unwrap();
    let (code, message) = reported(bad.release(true).unwrap_err());
    assert_eq!(code, 1);
    assert!(
        message.contains("libvirt would embed unescaped in XML"),
        "{message}"
    );
}

#[test]
fn a_panic_becomes_minus_one_with_an_internal_error() {
    let plugin = plugin();
    let mut manager = plugin
        .new_manager(&domain("panic-in-add"), NewFlags::default())
        .unwrap();
    let (code, message) = reported(
        manager
            .add_resource(&Resource::Disk {
                path: "/p.img".into(),
                access: Access::Exclusive,
            })
            .unwrap_err(),
    );
    assert_eq!(code, 1, "VIR_ERR_INTERNAL_ERROR");
    assert_eq!(
        message,
        "panic in drvAddResource: deliberate panic for panic-in-add"
    );
}

#[test]
fn init_is_refcounted_and_foreign_versions_are_refused() {
    let mut plugin = Plugin::from_static(&virLockDriverImpl, "recorder");
    let config = Path::new("/nonexistent/qemu-recorder.conf");
    let (code, message) = reported(plugin.init_with_version(2_000_000, config).unwrap_err());
    assert_eq!(code, 67);
    assert!(
        message.contains("lock driver ABI version 2000000 is not supported"),
        "{message}"
    );
    plugin.init(config).unwrap();
    plugin.init(config).unwrap();
    assert_eq!(plugin.refs(), 2);
    plugin.deinit().unwrap();
    plugin.deinit().unwrap();
    assert_eq!(plugin.refs(), 0);
}
