//! JSON string literals for the tools' `--json` output, shared by `raftctl` and `raft-dump`
//! (included with `#[path]`). The encoder lives in the library, next to the status encoder the
//! node's `GET /status` and `raftctl status --json` share.

pub use mini_raft::server::status::json_str;
