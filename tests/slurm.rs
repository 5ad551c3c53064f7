//! `sweep --executor slurm` on a real Slurm cluster: the one-machine cluster of
//! scripts/slurm-up.sh (scripts/test starts it). Jobs run this test's own binary, by absolute
//! path, in temporary folders that slurmd (on this machine) shares with the test.
//!
//! Without a cluster these tests say so loudly and pass, except under CI (the `CI` variable
//! set), where a missing cluster fails them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloudchamber::store::{RunStatus, Store};

/// The tests share one single-node cluster: run one at a time, so a requeued element is not
/// launched while five other tests' jobs crowd the node (under that load a relaunch failed
/// at once, exit 1 with no output, and the test timed out).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cluster's configuration, when a cluster answers.
fn slurm(test: &str) -> Option<PathBuf> {
    let conf = std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/cloudchamber-slurm/slurm.conf"));
    let up = conf.exists()
        && Command::new("scontrol")
            .arg("ping")
            .env("SLURM_CONF", &conf)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"));
    if up {
        return Some(conf);
    }
    let why = format!(
        "no Slurm cluster answers (SLURM_CONF={}); start one with `sudo bash scripts/slurm-up.sh` \
         or run `bash scripts/test`",
        conf.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set, and {why}");
    }
    eprintln!("\n!!!!! SKIPPED {test}: {why} !!!!!\n");
    None
}

/// One test's folder, store and cluster; cancels every job it submitted when dropped (a failed
/// test must not leave jobs running in a deleted folder).
struct Lab {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Lab {
    fn new(conf: PathBuf, files: &[(&str, &str)]) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Lab { dir, conf }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cc(&self, args: &[&str]) -> Output {
        let o = Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
            .current_dir(self.dir.path())
            .env("SLURM_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "$ cloudchamber {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Runs cloudchamber and returns its standard output, failing the test on an error.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cc(args);
        assert!(
            o.status.success(),
            "cloudchamber {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn tool(&self, name: &str, args: &[&str]) -> String {
        let o = Command::new(name)
            .env("SLURM_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn job_ids(&self, store: &str, sweep: &str) -> Vec<String> {
        let Ok(s) = Store::open(&self.path(store)) else {
            return Vec::new();
        };
        s.slurm_jobs(sweep)
            .unwrap_or_default()
            .into_iter()
            .map(|j| j.job_id)
            .collect()
    }

    /// `(JOB_TASK, state)` of this sweep's queued or running elements.
    /// The sweep's elements Slurm still holds, `(JOB_TASK, state)`; retried while `squeue`
    /// itself fails (a busy controller answers with an error, which must not read as "empty").
    fn queue(&self, store: &str, sweep: &str) -> Vec<(String, String)> {
        let ids = self.job_ids(store, sweep);
        if ids.is_empty() {
            return Vec::new();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let o = loop {
            let o = Command::new("squeue")
                .env("SLURM_CONF", &self.conf)
                .args(["--noheader", "--array", "--format=%i %T"])
                .arg(format!("--jobs={}", ids.join(",")))
                .output()
                .unwrap();
            if o.status.success() {
                break o;
            }
            assert!(
                Instant::now() < deadline,
                "squeue keeps failing: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let (a, b) = l.trim().split_once(' ')?;
                Some((a.to_string(), b.to_string()))
            })
            .collect()
    }

    /// Waits until Slurm has nothing of this sweep queued or running; returns the most elements
    /// seen running at once.
    fn wait(&self, store: &str, sweep: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut most = 0;
        loop {
            let q = self.queue(store, sweep);
            most = most.max(q.iter().filter(|(_, s)| s == "RUNNING").count());
            if q.is_empty() {
                return most;
            }
            assert!(Instant::now() < deadline, "jobs still queued: {q:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `f` holds, polling.
    fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The shard's progress file of a run, if written.
    fn progress(&self, id: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(&format!("shards/{id}/status.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for store in ["slurm.db"] {
            for sweep in ["eq", "cut", "kill", "rq", "a", "b"] {
                let ids = self.job_ids(store, sweep);
                if !ids.is_empty() {
                    let _ = Command::new("scancel")
                        .env("SLURM_CONF", &self.conf)
                        .args(&ids)
                        .output();
                }
            }
        }
    }
}

/// The run ids and every sample, bit for bit, of two stores are the same.
fn assert_same_runs(a: &Path, b: &Path) {
    let (sa, sb) = (Store::open(a).unwrap(), Store::open(b).unwrap());
    let runs = |s: &Store| -> BTreeMap<String, (RunStatus, Option<u64>)> {
        s.runs()
            .unwrap()
            .into_iter()
            .map(|r| (r.id, (r.status, r.steps)))
            .collect()
    };
    let (ra, rb) = (runs(&sa), runs(&sb));
    assert_eq!(
        ra,
        rb,
        "{} and {} hold different runs",
        a.display(),
        b.display()
    );
    assert_eq!(
        sa.runs().unwrap().len(),
        ra.len(),
        "a run is in the store twice"
    );
    for id in ra.keys() {
        let bits = |s: &Store| -> Vec<(u64, Option<u32>, String, u64)> {
            s.metrics(id)
                .unwrap()
                .into_iter()
                .map(|m| (m.step, m.layer, m.name, m.value.to_bits()))
                .collect()
        };
        let (ma, mb) = (bits(&sa), bits(&sb));
        assert!(!ma.is_empty());
        assert!(ma == mb, "run {id}: metrics differ");
    }
}

/// The ids of a sweep, in index order, from `--dry-run`.
fn sweep_ids(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            parts.next()?.parse::<usize>().ok()?;
            let id = parts.next()?;
            id.chars()
                .all(|c| c.is_ascii_hexdigit())
                .then(|| id.to_string())
        })
        .collect()
}

fn base(steps: u32, width: u32, depth: u32, checkpoint_every: u32) -> String {
    format!(
        r#"seed = 3

[task.teacher_student]
input_dim = 16
n_train = 512
n_test = 64

[model]
width = {width}
depth = {depth}

[train]
steps = {steps}
batch_size = 128
eval_every = 100
checkpoint_every = {checkpoint_every}

[observe]
log_every = 10
"#
    )
}

#[test]
fn a_slurm_sweep_collects_to_the_store_of_the_same_local_sweep() {
    let _one = one_at_a_time();
    let Some(conf) = slurm("a_slurm_sweep_collects_to_the_store_of_the_same_local_sweep") else {
        return;
    };
    let sweep = format!(
        "{}\n[sweep]\nname = \"eq\"\nseeds = [0, 1, 2]\n[sweep.axes]\n\"optim.lr\" = [1e-3, 3e-2]\n\
         \"model.activation\" = [\"tanh\", \"relu\"]\n",
        base(60, 16, 2, 20)
    );
    let lab = Lab::new(conf, &[("s.toml", &sweep)]);
    let out = lab.ok(&[
        "--store",
        "slurm.db",
        "sweep",
        "s.toml",
        "--executor",
        "slurm",
        "--array-parallelism",
        "2",
    ]);
    assert!(out.contains("(--array=0-11%2): 12 runs"), "{out}");
    let most = lab.wait("slurm.db", "eq");
    assert!(most <= 2, "{most} elements ran at once");
    let status = lab.ok(&["--store", "slurm.db", "status", "eq"]);
    assert!(status.contains("collected 12 runs"), "{status}");
    assert!(status.contains("12 runs — 12 completed"), "{status}");
    // Collecting again imports nothing, and a second submission has nothing to do.
    let again = lab.ok(&["--store", "slurm.db", "collect", "eq"]);
    assert!(
        again.contains("imported 0 runs") && again.contains("12 imported before"),
        "{again}"
    );
    let resubmit = lab.ok(&[
        "--store",
        "slurm.db",
        "sweep",
        "s.toml",
        "--executor",
        "slurm",
    ]);
    assert!(
        resubmit.contains("nothing to submit (12 finished"),
        "{resubmit}"
    );

    lab.ok(&["--store", "local.db", "sweep", "s.toml", "--workers", "2"]);
    assert_same_runs(&lab.path("slurm.db"), &lab.path("local.db"));
    // Artifacts came along (the resolved spec of each run).
    let ids = sweep_ids(&lab.ok(&["sweep", "s.toml", "--dry-run"]));
    assert_eq!(ids.len(), 12);
    for id in &ids {
        assert!(lab.path(&format!("runs/{id}/spec.toml")).exists(), "{id}");
    }
}

#[test]
fn cancelled_elements_are_resubmitted_and_every_run_ends_exactly_once() {
    let _one = one_at_a_time();
    let Some(conf) = slurm("cancelled_elements_are_resubmitted_and_every_run_ends_exactly_once")
    else {
        return;
    };
    // Runs of ~1-2 s, checkpointed every 100 steps.
    let sweep = format!(
        "{}\n[sweep]\nname = \"cut\"\nseeds = [0, 1, 2, 3]\n",
        base(1200, 256, 3, 100)
    );
    let lab = Lab::new(conf, &[("s.toml", &sweep)]);
    let ids = sweep_ids(&lab.ok(&["sweep", "s.toml", "--dry-run"]));
    let submit = [
        "--store",
        "slurm.db",
        "sweep",
        "s.toml",
        "--executor",
        "slurm",
    ];
    let out = lab.ok(&[&submit[..], &["--array-parallelism", "2"]].concat());
    assert!(out.contains("(--array=0-3%2): 4 runs"), "{out}");
    let job = lab.job_ids("slurm.db", "cut").remove(0);

    // Element 0 is training (its shard says running, with steps recorded): cancel it, and
    // element 3, still pending.
    lab.until("run 0 trains", || {
        lab.progress(&ids[0])
            .is_some_and(|p| p["status"] == "running")
            && lab
                .path(&format!(
                    "shards/{}/runs/{}/checkpoint.safetensors",
                    ids[0], ids[0]
                ))
                .exists()
    });
    lab.tool("scancel", &[&format!("{job}_0"), &format!("{job}_3")]);
    let status = lab.ok(&["--store", "slurm.db", "status", "cut"]);
    assert!(status.contains("slurm: job"), "{status}");
    lab.wait("slurm.db", "cut");

    // The cancelled run checkpointed on SIGTERM and stopped; the pending one never started.
    let p0 = lab.progress(&ids[0]).unwrap();
    assert_eq!(p0["status"], "interrupted", "{p0}");
    let stopped_at = p0["steps"].as_u64().unwrap();
    assert!(stopped_at > 0 && stopped_at < 1200, "{p0}");
    assert!(lab.progress(&ids[3]).is_none());
    let status = lab.ok(&["--store", "slurm.db", "status", "cut"]);
    assert!(status.contains("4 runs — 2 completed"), "{status}");
    assert!(
        status.contains(&format!("{job}_0  CANCELLED"))
            && status.contains(&format!(
                "interrupted after {stopped_at} steps, checkpointed"
            )),
        "{status}"
    );
    // Slurm keeps no record of a pending element cancelled: it has left the queue unstarted.
    assert!(
        status.contains(&format!(
            "{job}_3  left the queue  {}  seed=3: never started",
            ids[3]
        )),
        "{status}"
    );

    // Submitting again sends exactly the two runs that did not finish.
    let out = lab.ok(&submit);
    assert!(out.contains("(--array=0,3): 2 runs (2 finished"), "{out}");
    lab.wait("slurm.db", "cut");
    let status = lab.ok(&["--store", "slurm.db", "status", "cut"]);
    assert!(status.contains("4 runs — 4 completed"), "{status}");
    let log = std::fs::read_dir(lab.path("shards/logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains(&format!("resumed from step {stopped_at}")),
        "{log}"
    );
    // Every run once, and the resumed run bit-identical to one never interrupted.
    lab.ok(&["--store", "local.db", "sweep", "s.toml", "--workers", "2"]);
    assert_same_runs(&lab.path("slurm.db"), &lab.path("local.db"));
}

#[test]
fn a_killed_shard_writer_is_ignored_by_collect_and_the_resubmission_completes_it() {
    let _one = one_at_a_time();
    let Some(conf) =
        slurm("a_killed_shard_writer_is_ignored_by_collect_and_the_resubmission_completes_it")
    else {
        return;
    };
    let sweep = format!(
        "{}\n[sweep]\nname = \"kill\"\nseeds = [0, 1]\n",
        base(1200, 256, 3, 100)
    );
    let lab = Lab::new(conf, &[("s.toml", &sweep)]);
    let ids = sweep_ids(&lab.ok(&["sweep", "s.toml", "--dry-run"]));
    let submit = [
        "--store",
        "slurm.db",
        "sweep",
        "s.toml",
        "--executor",
        "slurm",
    ];
    lab.ok(&submit);
    // SIGKILL the process writing run 0's shard once it has checkpointed and written samples.
    let work = lab.path(&format!("shards/{}/work.db", ids[0]));
    lab.until("run 0 has written samples past a checkpoint", || {
        lab.path(&format!(
            "shards/{}/runs/{}/checkpoint.safetensors",
            ids[0], ids[0]
        ))
        .exists()
            && Store::open(&work)
                .and_then(|s| s.metrics(&ids[0]))
                .is_ok_and(|m| !m.is_empty())
    });
    let pid = lab.progress(&ids[0]).unwrap()["pid"].as_u64().unwrap();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    lab.wait("slurm.db", "kill");

    // Its shard is half-written: samples in work.db, status still running, no done marker.
    let partial = Store::open(&work).unwrap();
    let r = partial.run(&ids[0]).unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Running);
    let written = partial.metrics(&ids[0]).unwrap().len();
    assert!(written > 0);
    assert!(!lab.path(&format!("shards/{}/done", ids[0])).exists());
    drop(partial);
    // collect imports only the other run; the killed one is absent from the store.
    let out = lab.ok(&["--store", "slurm.db", "collect"]);
    assert!(out.contains("imported 1 run "), "{out}");
    let store = Store::open(&lab.path("slurm.db")).unwrap();
    assert!(store.run(&ids[0]).unwrap().is_none());
    assert_eq!(
        store.run(&ids[1]).unwrap().unwrap().status,
        RunStatus::Completed
    );
    drop(store);
    let status = lab.ok(&["--store", "slurm.db", "status", "kill"]);
    assert!(
        status.contains("no done marker: its job ended while it ran"),
        "{status}"
    );

    // The resubmission sends run 0 only; it resumes from the checkpoint and completes.
    let out = lab.ok(&submit);
    assert!(out.contains("(--array=0): 1 run (1 finished"), "{out}");
    lab.wait("slurm.db", "kill");
    let out = lab.ok(&["--store", "slurm.db", "collect", "kill"]);
    assert!(out.contains("imported 1 run "), "{out}");
    lab.ok(&["--store", "local.db", "sweep", "s.toml"]);
    assert_same_runs(&lab.path("slurm.db"), &lab.path("local.db"));
}

#[test]
fn a_requeued_element_resumes_from_its_checkpoint() {
    let _one = one_at_a_time();
    let Some(conf) = slurm("a_requeued_element_resumes_from_its_checkpoint") else {
        return;
    };
    let sweep = format!(
        "{}\n[sweep]\nname = \"rq\"\nseeds = [5]\n",
        base(1200, 256, 3, 100)
    );
    let lab = Lab::new(conf, &[("s.toml", &sweep)]);
    let ids = sweep_ids(&lab.ok(&["sweep", "s.toml", "--dry-run"]));
    lab.ok(&[
        "--store",
        "slurm.db",
        "sweep",
        "s.toml",
        "--executor",
        "slurm",
        "--requeue",
    ]);
    let job = lab.job_ids("slurm.db", "rq").remove(0);
    let element = format!("{job}_0");
    let show = lab.tool("scontrol", &["--oneliner", "show", "job", &element]);
    assert!(show.contains("Requeue=1"), "{show}");
    lab.until("run 0 has checkpointed", || {
        lab.path(&format!(
            "shards/{}/runs/{}/checkpoint.safetensors",
            ids[0], ids[0]
        ))
        .exists()
    });
    // What preemption with PreemptMode=REQUEUE does: stop the element, queue it again.
    lab.tool("scontrol", &["requeue", &element]);
    // Slurm holds a requeued job back for a while (reason BeginTime); release it now.
    lab.until("the element is queued again", || {
        lab.queue("slurm.db", "rq")
            .iter()
            .any(|(_, st)| st == "PENDING")
    });
    // slurmd refuses a job credential issued in the same second as the kill that revoked the
    // job's last one ("Job credential revoked", the restart exits at once): measured when the
    // release came 0.35 s after the requeue. Let a second pass first.
    std::thread::sleep(Duration::from_secs(2));
    lab.tool(
        "scontrol",
        &["update", &format!("JobId={element}"), "StartTime=now"],
    );
    lab.wait("slurm.db", "rq");
    // The shard's own status is the authority: a requeued element can drop out of squeue's
    // listing for a moment while the controller moves it, so wait for it too.
    let log_path = lab.path(&format!("shards/logs/rq-{job}_0.out"));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !(lab
        .progress(&ids[0])
        .is_some_and(|p| p["status"] == "completed")
        && std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("completed in")))
    {
        // On a timeout, say what Slurm and the shard show, so a failure can be understood.
        assert!(
            Instant::now() < deadline,
            "timed out waiting until the requeued run has completed\nprogress: {:?}\nlog:\n{}\nscontrol: {}",
            lab.progress(&ids[0]),
            std::fs::read_to_string(&log_path).unwrap_or_default(),
            Command::new("scontrol")
                .env("SLURM_CONF", &lab.conf)
                .args(["--oneliner", "show", "job", &element])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr))
                .unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("DUE TO JOB REQUEUE"), "{log}");
    let first = lab.progress(&ids[0]).unwrap();
    assert_eq!(first["status"], "completed", "{first}");
    assert!(
        log.contains("completed in 1200 steps") && log.contains("resumed from step"),
        "{log}"
    );
    let status = lab.ok(&["--store", "slurm.db", "status", "rq"]);
    assert!(status.contains("1 runs — 1 completed"), "{status}");
    lab.ok(&["--store", "local.db", "sweep", "s.toml"]);
    assert_same_runs(&lab.path("slurm.db"), &lab.path("local.db"));
}

#[test]
fn cancel_stops_this_sweeps_jobs_only() {
    let _one = one_at_a_time();
    let Some(conf) = slurm("cancel_stops_this_sweeps_jobs_only") else {
        return;
    };
    let lab = Lab::new(
        conf,
        &[
            (
                "a.toml",
                &format!(
                    "{}\n[sweep]\nname = \"a\"\nseeds = [0, 1]\n",
                    base(1200, 256, 3, 100)
                ),
            ),
            (
                "b.toml",
                &format!(
                    "{}\n[sweep]\nname = \"b\"\nseeds = [7]\n",
                    base(1200, 256, 3, 100)
                ),
            ),
        ],
    );
    let a_ids = sweep_ids(&lab.ok(&["sweep", "a.toml", "--dry-run"]));
    // Another user's job on the same cluster, and sweep b in the same store.
    let other = lab.tool(
        "sbatch",
        &["--parsable", "--output=/dev/null", "--wrap", "sleep 60"],
    );
    let other = other.trim().to_string();
    for (file, k) in [("a.toml", "1"), ("b.toml", "1")] {
        lab.ok(&[
            "--store",
            "slurm.db",
            "sweep",
            file,
            "--executor",
            "slurm",
            "--array-parallelism",
            k,
        ]);
    }
    lab.until("a's first run trains", || {
        lab.progress(&a_ids[0])
            .is_some_and(|p| p["status"] == "running")
    });
    let status = lab.ok(&["--store", "slurm.db", "status", "a"]);
    assert!(
        status.contains(&format!("_0  RUNNING  {}  seed=0", a_ids[0]))
            && status.contains(&format!(
                "_1  PENDING (JobArrayTaskLimit)  {}  seed=1",
                a_ids[1]
            )),
        "{status}"
    );
    let out = lab.ok(&["--store", "slurm.db", "cancel", "a"]);
    assert!(out.contains("(1 running, 1 queued)"), "{out}");
    lab.wait("slurm.db", "a");
    // b and the other job were left alone.
    let queue = lab.tool("squeue", &["--noheader", "--format=%i"]);
    assert!(queue.lines().any(|l| l.trim() == other), "{queue}");
    let b_job = lab.job_ids("slurm.db", "b").remove(0);
    assert!(queue.contains(&b_job), "{queue}");
    lab.tool("scancel", &[&other]);
    lab.wait("slurm.db", "b");
    let status = lab.ok(&["--store", "slurm.db", "status"]);
    assert!(status.contains("sweep b: 1 runs — 1 completed"), "{status}");
    assert!(status.contains("sweep a: 2 runs — 0 completed"), "{status}");
    let again = lab.ok(&["--store", "slurm.db", "cancel", "a"]);
    assert!(again.contains("nothing to cancel"), "{again}");
}

/// A sweep's name is a label: the job script and the logs of a sweep named with `..` and `/`
/// stay inside the store's `shards/` folder.
#[test]
fn a_sweep_name_cannot_place_files_outside_the_store() {
    let _one = one_at_a_time();
    let Some(conf) = slurm("a_sweep_name_cannot_place_files_outside_the_store") else {
        return;
    };
    let sweep = format!(
        "{}\n[sweep]\nname = \"../../../ESCAPED\"\nseeds = 1\n",
        base(20, 8, 1, 10)
    );
    let lab = Lab::new(conf, &[("s.toml", &sweep)]);
    lab.ok(&[
        "--store",
        "slurm.db",
        "sweep",
        "s.toml",
        "--executor",
        "slurm",
    ]);
    lab.wait("slurm.db", "../../../ESCAPED");
    let listed = |dir: PathBuf| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let jobs = listed(lab.path("shards/jobs"));
    assert!(
        jobs.iter().any(|f| f.starts_with("_.._.._.._ESCAPED-")),
        "{jobs:?}"
    );
    // Where `shards/jobs/../../../ESCAPED-*` would have landed.
    let above = lab.path("..");
    assert!(
        !listed(above).iter().any(|f| f.starts_with("ESCAPED")),
        "a file escaped the store's folder"
    );
}
