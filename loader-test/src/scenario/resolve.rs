//! Resolving resource references (`disk`, `disks[3]`, `disks[0..99]`, an owner's list, a step's
//! context) into [`Concrete`] resources, `count` expanded.

use super::{Mode, Op, Scenario, Step};

/// A resource after expansion of `count`: what the plugin is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concrete {
    /// `disk` or `disks[7]`.
    pub name: String,
    /// Disk image file name, or `None` for a lease.
    pub disk: Option<String>,
    /// Lease key, or `None` for a disk.
    pub lease: Option<String>,
    /// The mode.
    pub mode: Mode,
}

impl Scenario {
    /// Every resource, expanded, by declared name (counted resources in index order).
    pub fn expanded(&self, name: &str) -> Option<Vec<Concrete>> {
        let spec = self.resources.get(name)?;
        let one = |index: Option<usize>| {
            let fill = |text: &Option<String>| {
                text.as_ref().map(|t| match index {
                    Some(i) => t.replace("{i}", &format!("{i:03}")),
                    None => t.clone(),
                })
            };
            Concrete {
                name: index.map_or_else(|| name.to_owned(), |i| format!("{name}[{i}]")),
                disk: fill(&spec.disk),
                lease: fill(&spec.lease),
                mode: spec.mode,
            }
        };
        Some(match spec.count {
            Some(count) => (0..count).map(|i| one(Some(i))).collect(),
            None => vec![one(None)],
        })
    }

    /// Resolves a reference (`disk`, `disks`, `disks[3]`, `disks[0..99]`).
    pub fn resolve(&self, reference: &str) -> Result<Vec<Concrete>, String> {
        let (base, range) = match reference.split_once('[') {
            Some((base, rest)) => {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| format!("'{reference}': missing ']'"))?;
                (base, Some(inner))
            }
            None => (reference, None),
        };
        let all = self
            .expanded(base)
            .ok_or_else(|| format!("unknown resource '{base}'"))?;
        let Some(range) = range else {
            return Ok(all);
        };
        if self.resources.get(base).and_then(|r| r.count).is_none() {
            return Err(format!(
                "'{reference}': '{base}' has no count, so it cannot be indexed"
            ));
        }
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{reference}': '{s}' is not an index"))
        };
        let (start, end) = match range.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let i = parse(range)?;
                (i, i + 1)
            }
        };
        if start >= end || end > all.len() {
            return Err(format!(
                "'{reference}': range {start}..{end} is outside 0..{}",
                all.len()
            ));
        }
        Ok(all[start..end].to_vec())
    }

    /// The resources of `owner`, expanded, in declaration order.
    pub fn owner_resources(&self, owner: &str) -> Result<Vec<Concrete>, String> {
        let refs = self
            .owners
            .get(owner)
            .ok_or_else(|| format!("unknown owner '{owner}'"))?;
        let mut out = Vec::new();
        for reference in refs {
            out.extend(self.resolve(reference)?);
        }
        Ok(out)
    }

    /// The resources of a step's context: its own list, or all of the owner's.
    pub fn step_resources(&self, step: &Step) -> Result<Vec<Concrete>, String> {
        match (&step.resources, &step.owner) {
            (Some(list), _) => {
                let mut out = Vec::new();
                for reference in list {
                    out.extend(self.resolve(reference)?);
                }
                Ok(out)
            }
            (None, Some(owner)) => self.owner_resources(owner),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Whether any resource is a lease.
    pub fn has_leases(&self) -> bool {
        self.resources.values().any(|r| r.lease.is_some())
    }

    /// Whether a step restarts the plugin's daemon.
    pub fn restarts_daemon(&self) -> bool {
        self.steps.iter().any(|s| s.op == Op::RestartDaemon)
    }
}
