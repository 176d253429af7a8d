//! The soak's quick form (`bench soak --seconds 20`), in both modes, so
//! that the soak code cannot rot: CI runs it (`.ci/run`). It runs the
//! real examples under the whole mix of clients and fails when the
//! verdict does: a lost or wrong reply, a connection held past its limit,
//! a descriptor not given back, the stats identity broken, or a server
//! that does not exit cleanly. (Growth is only judged in runs of 10
//! minutes or more; docs/reliability.md has the hour-long runs.)

use std::path::PathBuf;
use std::process::Command;

fn quick_soak(turns: bool) {
    let mode = if turns { "turns" } else { "handler" };
    let chart = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{mode}.svg"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_bench"));
    command
        .args(["soak", "--seconds", "20", "--chart"])
        .arg(&chart);
    if turns {
        command.arg("--turns");
    }
    // The soak ends by itself: 20 s of load, then bounded waits (the
    // clients' 30 s patience, the servers' 15 s to exit) if something is
    // wrong; it never needs a timeout from here.
    let output = command.output().expect("run bench soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the {mode} soak failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    let svg = std::fs::read_to_string(&chart).expect("the chart");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
}

#[test]
fn quick_soak_handler_mode() {
    quick_soak(false);
}

#[test]
fn quick_soak_turn_mode() {
    quick_soak(true);
}
