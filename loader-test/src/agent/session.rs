//! The session process (`__agent-session`): serves one cell on stdin / stdout, making the
//! calls of the cell's remote owners on a [`LocalNode`] of this machine.

use std::io::{BufRead, Write};
use std::path::Path;

use lockmgr::{Domain, Uuid};

use super::SessionArgs;
use super::wire::{Reply, Request, Setup, resources};
use crate::daemons::{self, Layout, PluginSpec};
use crate::node::{Failure, LocalNode, OwnerNode};

/// `__agent-session`: serves one cell on stdin / stdout (the connection).
pub fn session_command(args: &SessionArgs) -> u8 {
    let mut out = match crate::sys::take_stdout_for_events() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("lockmgr-loader-test agent session: cannot set up the replies: {err}");
            return crate::EXIT_FAIL;
        }
    };
    let allowed = match daemons::plugins_from_args(&args.plugins) {
        Ok(plugins) => plugins,
        Err(err) => {
            eprintln!("lockmgr-loader-test agent session: {err}");
            return 2;
        }
    };
    let mut session = Session {
        args,
        allowed,
        node: None,
        cell: String::new(),
    };
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (reply, finished) = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Finish) => (session.finish(), true),
            Ok(request) => (session.handle(request), false),
            Err(err) => (
                Reply::Failed {
                    message: format!("bad request ({err}): {line}"),
                    reported: None,
                },
                false,
            ),
        };
        let mut text = serde_json::to_vec(&reply).unwrap_or_default();
        text.push(b'\n');
        if out.write_all(&text).and_then(|()| out.flush()).is_err() || finished {
            break;
        }
    }
    // The cell went away without `finish` (or finished): nothing may stay behind.
    if let Some(mut node) = session.node.take() {
        if let Err(err) = node.finish() {
            eprintln!(
                "lockmgr-loader-test agent session ({}): at the end: {err}",
                session.cell
            );
        }
    }
    0
}

struct Session<'a> {
    args: &'a SessionArgs,
    allowed: Vec<PluginSpec>,
    node: Option<LocalNode>,
    cell: String,
}

impl Session<'_> {
    fn setup(&mut self, setup: &Setup) -> Result<String, String> {
        if self.node.is_some() {
            return Err("this session is already set up".into());
        }
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        let spec = self
            .allowed
            .iter()
            .find(|p| same(&p.path, &setup.plugin))
            .ok_or_else(|| {
                format!(
                    "this agent does not load {} (it was started with --plugin {})",
                    setup.plugin.display(),
                    self.args.plugins.join(" --plugin ")
                )
            })?;
        if spec.profile.as_str() != setup.profile {
            return Err(format!(
                "{} is a {} plugin here, not {}",
                setup.plugin.display(),
                spec.profile,
                setup.profile
            ));
        }
        self.cell = setup.cell.clone();
        let mut layout = Layout::create(&self.args.scratch)
            .map_err(|e| format!("scratch {}: {e}", self.args.scratch.display()))?;
        if let Some(dir) = &setup.lockspace {
            layout.lockspace = dir.clone();
        }
        let env = daemons::prepare(
            spec.profile,
            &spec.path,
            &self.args.tools.tools(),
            &layout,
            setup.lockspace.is_some(),
        )
        .map_err(|e| format!("setting up {}: {e}", spec.profile))?;
        let detail = env.describe();
        self.node = Some(LocalNode::new(&spec.path, env)?);
        eprintln!(
            "lockmgr-loader-test agent session: {} set up ({detail})",
            self.cell
        );
        Ok(detail)
    }

    fn handle(&mut self, request: Request) -> Reply {
        if let Request::Setup(setup) = &request {
            return match self.setup(setup) {
                Ok(detail) => Reply::done(detail),
                Err(message) => Reply::Failed {
                    message,
                    reported: None,
                },
            };
        }
        let Some(node) = self.node.as_mut() else {
            return Reply::Failed {
                message: "the session is not set up (setup comes first)".into(),
                reported: None,
            };
        };
        let result = match request {
            Request::Setup(_) | Request::Finish => Err(Failure::harness(
                "setup and finish are handled before the plugin's calls",
            )),
            Request::Register {
                owner,
                domain,
                resources: wire,
            } => Uuid::parse(&domain.uuid)
                .map_err(|e| Failure::harness(e.to_string()))
                .and_then(|uuid| {
                    let domain = Domain {
                        uuid,
                        name: domain.name,
                        id: domain.id,
                        pid: 0,
                        uri: None,
                    };
                    node.register(&owner, &domain, &resources(&wire))
                })
                .map(|(pid, detail)| Reply::Done {
                    detail: Some(detail),
                    pid: Some(pid),
                    state: None,
                }),
            Request::Acquire {
                owner,
                resources: wire,
                state,
            } => node
                .acquire(&owner, &resources(&wire), state.as_deref())
                .map(|()| Reply::done("locked")),
            Request::Release {
                owner,
                resources: wire,
                want_state,
            } => node
                .release(&owner, &resources(&wire), want_state)
                .map(Reply::state),
            Request::Inquire {
                owner,
                resources: wire,
            } => node.inquire(&owner, &resources(&wire)).map(Reply::state),
            Request::Kill { owner } => node.kill(&owner).map(Reply::done),
            Request::RestartLibvirtd => node.restart_libvirtd().map(Reply::done),
            Request::RestartDaemon => node.restart_daemon().map(|detail| Reply::Done {
                detail,
                pid: None,
                state: None,
            }),
        };
        result.unwrap_or_else(Reply::from)
    }

    fn finish(&mut self) -> Reply {
        match self.node.take() {
            Some(mut node) => match node.finish() {
                Ok(()) => Reply::done("finished"),
                Err(message) => Reply::Failed {
                    message,
                    reported: None,
                },
            },
            None => Reply::done("nothing was set up"),
        }
    }
}
