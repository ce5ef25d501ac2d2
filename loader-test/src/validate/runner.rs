//! The child's step runner (`__validate-one`): [`run_steps`] and the [`Steps`] machinery that
//! streams one event per step, skips what cannot run, and classifies a failed call.

use std::io::Write;
use std::path::Path;

use lockmgr::host::HostError;

use super::{ALL_STEPS, Event, Status, StepResult, step_title};
use crate::known::{self, DaemonNeed};

/// Entry point of `__validate-one`: runs every step, writing events to `events`.
pub fn run_steps(plugin_path: &Path, config: &Path, events: &mut dyn Write) {
    let mut emit = |event: Event| {
        let _ = serde_json::to_writer(&mut *events, &event);
        let _ = events.write_all(b"\n");
        let _ = events.flush();
    };
    let workdir = match tempfile::Builder::new()
        .prefix("lockmgr-validate-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(err) => {
            emit(Event::Done(StepResult {
                step: "setup".into(),
                title: "scratch directory".into(),
                status: Status::Fail,
                detail: format!("cannot create a scratch directory: {err}"),
            }));
            return;
        }
    };
    let mut steps = Steps {
        emit: &mut emit,
        skip_reason: None,
        daemon: known::daemon_for(plugin_path),
        emitted: Vec::new(),
    };
    steps.run_all(plugin_path, config, workdir.path());
}

pub(super) struct Failure {
    pub(super) status: Status,
    pub(super) detail: String,
}

impl Failure {
    pub(super) fn fail(detail: impl Into<String>) -> Self {
        Failure {
            status: Status::Fail,
            detail: detail.into(),
        }
    }
}

pub(super) type StepOutcome<T> = Result<(T, String), Failure>;

pub(super) struct Steps<'a> {
    emit: &'a mut dyn FnMut(Event),
    pub(super) skip_reason: Option<String>,
    daemon: Option<DaemonNeed>,
    emitted: Vec<String>,
}

impl Steps<'_> {
    pub(super) fn run<T>(
        &mut self,
        step: &str,
        body: impl FnOnce(&Self) -> StepOutcome<T>,
    ) -> Option<T> {
        let title = step_title(step);
        self.emitted.push(step.to_owned());
        if let Some(reason) = &self.skip_reason {
            let result = StepResult {
                step: step.into(),
                title: title.into(),
                status: Status::Skipped,
                detail: reason.clone(),
            };
            (self.emit)(Event::Done(result));
            return None;
        }
        (self.emit)(Event::Start { step: step.into() });
        let (status, detail, value) = match body(self) {
            Ok((value, detail)) => (Status::Pass, detail, Some(value)),
            Err(Failure { status, detail }) => (status, detail, None),
        };
        let result = StepResult {
            step: step.into(),
            title: title.into(),
            status,
            detail,
        };
        (self.emit)(Event::Done(result));
        value
    }

    pub(super) fn warn(&mut self, step: &str, detail: String) {
        self.emitted.push(step.to_owned());
        let title = step_title(step).into();
        (self.emit)(Event::Done(StepResult {
            step: step.into(),
            title,
            status: Status::Warn,
            detail,
        }));
    }

    /// A failed call: "needs daemon" when the plugin's daemon is known and not running.
    pub(super) fn classify(&self, err: &HostError) -> Failure {
        let text = err.to_string();
        if let Some(need) = self.daemon {
            if !need.is_running() {
                return Failure {
                    status: Status::NeedsDaemon,
                    detail: format!(
                        "needs a running {} ({} is not accepting connections; {}). The plugin said: {text}",
                        need.daemon, need.socket, need.hint
                    ),
                };
            }
        }
        if known::mentions_unreachable_daemon(&text) {
            return Failure {
                status: Status::NeedsDaemon,
                detail: format!("the plugin could not reach its lock daemon: {text}"),
            };
        }
        Failure::fail(text)
    }

    /// Reports every step not yet reported as skipped (after a failure that ends the run).
    pub(super) fn skip_remaining(&mut self) {
        for (step, _) in ALL_STEPS {
            if !self.emitted.iter().any(|done| done == step) {
                self.run(step, |_| Ok::<_, Failure>(((), String::new())));
            }
        }
    }
}
