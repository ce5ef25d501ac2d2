//! The test bed's errors: each names the file, node, command or cluster at fault.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while building the image or running a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This machine cannot run the test bed (not root, no /dev/net/tun, a missing tool...).
    /// Tests must fail on it, never skip.
    #[error("the DLM test bed cannot run here: {0}")]
    Precondition(String),

    /// A file or directory operation failed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },

    /// A host command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and output.
        detail: String,
    },

    /// Building the node image failed.
    #[error("node image: {0}")]
    Image(String),

    /// A cluster did not come up; the consoles' tails are included.
    #[error("cluster {cluster}: {reason}\n{consoles}")]
    Boot {
        /// The cluster (= network namespace) name.
        cluster: String,
        /// What went wrong.
        reason: String,
        /// The last lines of every node's console.
        consoles: String,
    },

    /// Talking to a node's guest agent failed.
    #[error("node{node} guest agent ({socket}): {reason}")]
    Agent {
        /// The node (1-based).
        node: usize,
        /// Its agent socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A command in a node failed or did not finish.
    #[error("node{node}: `{command}`: {detail}")]
    Guest {
        /// The node (1-based).
        node: usize,
        /// The command.
        command: String,
        /// What happened, with its output.
        detail: String,
    },

    /// The process got SIGINT/SIGTERM/SIGHUP: its clusters are being stopped, and it exits.
    #[error(
        "interrupted by signal {0}: the test bed is stopping this process's clusters and exiting"
    )]
    Interrupted(i32),

    /// A request about a node or cluster that does not exist or is gone.
    #[error("{0}")]
    Usage(String),
}

/// A `Result` with the test bed's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path and an action to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>, what: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>, what: &'static str) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            what,
            source,
        })
    }
}
