//! The fault suite (`just faults`): real processes killed mid-storm, then
//! the promises checked through the API — every acknowledged request ends
//! decided (none lost), exactly the quota or stock persisted when demand
//! exceeded it, nobody over their limit, and how long recovery took.
//!
//! These tests are `#[ignore]`d in the ordinary run (they start processes
//! and take CPU for seconds each); `scripts/faults.sh` runs them one at a
//! time with their output, which is the fault table.

mod embedded;
mod harness;
mod holds;
mod real;
mod relay;
