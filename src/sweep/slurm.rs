//! The Slurm executor: a sweep's unfinished runs become one job array, whose element `k` runs
//! point `k` of the sweep (`cloudchamber run-one FILE --index k`) into its own shard (see
//! [`super::shard`]); `collect` brings the shards into the store. Slurm is driven through its
//! commands (`sbatch`, `squeue`, `scontrol`, `scancel`), so anything they can reach works, and
//! job state lives in the store, not in Slurm's accounting (which many clusters keep from
//! users, and which a small cluster may not run at all).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{shard, Sweep};
use crate::error::Error;
use crate::store::{SlurmJob, Store};

/// What `sbatch` is asked for, beyond the array itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub partition: Option<String>,
    /// Time limit per element, in any form `sbatch --time` takes (`30:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// Cores per element (default: the largest `train.threads` of the runs submitted).
    pub cpus_per_task: Option<usize>,
    /// Memory per element, as `sbatch --mem` takes it (`2G`).
    pub mem: Option<String>,
    /// At most this many elements at once (`--array=…%K`).
    pub array_parallelism: Option<usize>,
    /// Let Slurm requeue an element that is preempted or whose node fails; it resumes from its
    /// checkpoint.
    pub requeue: bool,
    /// Passed to `sbatch` as they are (e.g. `--account=lab`), before the script.
    pub sbatch_args: Vec<String>,
}

/// `0-3,5,7-9`: sorted indices as Slurm's `--array` list.
pub fn array_list(indices: &[usize]) -> String {
    let set: BTreeSet<usize> = indices.iter().copied().collect();
    let mut out = String::new();
    let mut it = set.into_iter().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
    }
    out
}

/// Quotes a word for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An absolute path with symlinks resolved where it exists (jobs run in another directory, on
/// other nodes).
fn absolute(path: &Path) -> Result<PathBuf, Error> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let cwd = std::env::current_dir().map_err(Error::io(PathBuf::from(".")))?;
    let p = cwd.join(path);
    // The store file may not exist yet; its folder does (it was created to record the sweep).
    match (
        p.parent().and_then(|d| d.canonicalize().ok()),
        p.file_name(),
    ) {
        (Some(dir), Some(name)) => Ok(dir.join(name)),
        _ => Ok(p),
    }
}

/// The batch script of one submission: maps the array index to the run it stood for at
/// submission (so an element whose sweep file has since changed refuses to run another run),
/// then replaces itself with `cloudchamber run-one`, so Slurm's signals reach the run.
pub fn script(
    binary: &Path,
    store: &Path,
    sweep_file: &Path,
    overrides: &[String],
    runs: &[(usize, String)],
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str("# Written by `cloudchamber sweep --executor slurm`: one array element per run.\n");
    s.push_str("case \"$SLURM_ARRAY_TASK_ID\" in\n");
    for (k, id) in runs {
        let _ = writeln!(s, "  {k}) id={id} ;;");
    }
    s.push_str(
        "  *) echo \"cloudchamber: no run for array index $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n",
    );
    let _ = write!(
        s,
        "exec {} --store {} run-one {} --index \"$SLURM_ARRAY_TASK_ID\" --expect-id \"$id\"",
        shell_quote(&binary.display().to_string()),
        shell_quote(&store.display().to_string()),
        shell_quote(&sweep_file.display().to_string()),
    );
    for o in overrides {
        let _ = write!(s, " --set {}", shell_quote(o));
    }
    s.push('\n');
    s
}

/// Submits points `indices` of the sweep as one job array and records the job in the store.
pub fn submit(
    store: &mut Store,
    sw: &Sweep,
    overrides: &[String],
    opts: &Options,
    indices: &[usize],
) -> Result<SlurmJob, Error> {
    let store_path = absolute(store.path())?;
    let binary = std::env::current_exe().map_err(Error::io(PathBuf::from("cloudchamber")))?;
    let sweep_file = absolute(&sw.path)?;
    let runs: Vec<(usize, String)> = indices
        .iter()
        .filter_map(|&k| sw.runs.get(k).map(|r| (k, r.id.clone())))
        .collect();
    let text = script(&binary, &store_path, &sweep_file, overrides, &runs);

    let jobs_dir = shard::dir(&store_path).join("jobs");
    let logs_dir = shard::dir(&store_path).join("logs");
    for d in [&jobs_dir, &logs_dir] {
        std::fs::create_dir_all(d).map_err(Error::io(d.clone()))?;
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // The sweep's name is a label: file names made from it stay inside shards/.
    let file_name = crate::names::component(&sw.name);
    let script_path = jobs_dir.join(format!("{file_name}-{stamp}.sh"));
    std::fs::write(&script_path, &text).map_err(Error::io(script_path.clone()))?;

    let mut array = array_list(indices);
    if let Some(k) = opts.array_parallelism {
        let _ = write!(array, "%{k}");
    }
    let cpus = opts.cpus_per_task.unwrap_or_else(|| {
        runs.iter()
            .filter_map(|(k, _)| sw.runs.get(*k).map(|r| r.spec.train.threads))
            .max()
            .unwrap_or(1)
            .max(1)
    });
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable")
        .arg(format!("--job-name=cc-{file_name}"))
        .arg(format!("--array={array}"))
        .arg(format!("--cpus-per-task={cpus}"))
        .arg(format!(
            "--output={}",
            logs_dir.join(format!("{file_name}-%A_%a.out")).display()
        ))
        // A requeued element appends to its log rather than erasing the first attempt's.
        .arg("--open-mode=append")
        .arg(format!(
            "--chdir={}",
            store_path.parent().unwrap_or(Path::new("/")).display()
        ));
    if let Some(p) = &opts.partition {
        cmd.arg(format!("--partition={p}"));
    }
    if let Some(t) = &opts.time {
        cmd.arg(format!("--time={t}"));
    }
    if let Some(m) = &opts.mem {
        cmd.arg(format!("--mem={m}"));
    }
    cmd.arg(if opts.requeue {
        "--requeue"
    } else {
        "--no-requeue"
    });
    cmd.args(&opts.sbatch_args).arg(&script_path);
    let out = run_tool(&mut cmd, "sbatch")?;
    // --parsable prints `JOBID` or `JOBID;CLUSTER`.
    let job_id = out
        .lines()
        .next()
        .and_then(|l| l.split(';').next())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| Error::Failed {
            what: "sbatch".into(),
            message: format!("printed no job id: {out:?}"),
            hint: "run the sbatch command by hand to see what it says".into(),
        })?
        .to_string();
    let job = SlurmJob {
        job_id,
        sweep: sw.name.clone(),
        submitted_at: String::new(),
        array,
        runs,
        script: text,
    };
    store.record_slurm_job(&job)?;
    Ok(job)
}

/// Runs a Slurm command, returning its standard output; a missing command or a failure is an
/// error naming it.
fn run_tool(cmd: &mut Command, name: &str) -> Result<String, Error> {
    let out = cmd.output().map_err(|e| Error::Failed {
        what: name.into(),
        message: format!("could not run it: {e}"),
        hint: "run this on a Slurm login node (the Slurm commands must be on PATH)".into(),
    })?;
    if !out.status.success() {
        return Err(Error::Failed {
            what: name.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            hint: "the message above is Slurm's own".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One array element as Slurm reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub job_id: String,
    pub index: usize,
    /// `PENDING`, `RUNNING`, … or, once ended, `COMPLETED`, `FAILED`, `CANCELLED`, `PREEMPTED`,
    /// `TIMEOUT`, `NODE_FAIL`, `OUT_OF_MEMORY`.
    pub state: String,
    /// Why it is pending (`squeue`'s reason); for an ended element, its exit code `code:signal`.
    pub detail: String,
}

impl Task {
    /// `JOB_TASK`, as `scancel` and `scontrol` take it.
    pub fn name(&self) -> String {
        format!("{}_{}", self.job_id, self.index)
    }
}

/// Elements of these jobs still queued or running (`squeue`; an ended element is not listed).
pub fn queued(job_ids: &[String]) -> Result<Vec<Task>, Error> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new("squeue")
        .args(["--noheader", "--array", "--format=%i|%T|%r"])
        .arg(format!("--jobs={}", job_ids.join(",")))
        .output()
        .map_err(|e| Error::Failed {
            what: "squeue".into(),
            message: format!("could not run it: {e}"),
            hint: "run this on a Slurm login node (the Slurm commands must be on PATH)".into(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Every job has left the queue (Slurm forgets ended jobs after a while).
        if stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        return Err(Error::Failed {
            what: "squeue".into(),
            message: stderr.trim().to_string(),
            hint: "the message above is Slurm's own".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            let (job_id, index) = f.next()?.trim().split_once('_')?;
            Some(Task {
                job_id: job_id.to_string(),
                // A pending range not expanded (`12_[3-5]`) cannot happen with --array; skip it.
                index: index.parse().ok()?,
                state: f.next()?.trim().to_string(),
                detail: f.next().unwrap_or("").trim().to_string(),
            })
        })
        .collect())
}

/// The elements of these jobs that Slurm still has queued or running, each with the run it
/// stands for.
pub fn live_runs(jobs: &[SlurmJob]) -> Result<Vec<(Task, String)>, Error> {
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    Ok(queued(&ids)?
        .into_iter()
        .filter_map(|t| {
            let job = jobs.iter().find(|j| j.job_id == t.job_id)?;
            let (_, id) = job.runs.iter().find(|(k, _)| *k == t.index)?;
            let id = id.clone();
            Some((t, id))
        })
        .collect())
}

/// How this job's elements ended, for as long as Slurm remembers (`scontrol show job`, a few
/// minutes after the end by default); empty when it does not.
pub fn ended(job_id: &str) -> Vec<Task> {
    let Ok(out) = Command::new("scontrol")
        .args(["--oneliner", "show", "job", job_id])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            };
            Some(Task {
                job_id: field("ArrayJobId")?.to_string(),
                index: field("ArrayTaskId")?.parse().ok()?,
                state: field("JobState")?.to_string(),
                detail: format!("exit {}", field("ExitCode").unwrap_or("?")),
            })
        })
        .collect()
}

/// Cancels these jobs (`scancel`): running elements get SIGTERM, checkpoint and stop.
pub fn cancel(job_ids: &[String]) -> Result<(), Error> {
    if job_ids.is_empty() {
        return Ok(());
    }
    run_tool(Command::new("scancel").args(job_ids), "scancel").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists() {
        assert_eq!(array_list(&[]), "");
        assert_eq!(array_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_list(&[9, 0, 2, 3, 4, 7]), "0,2-4,7,9");
        assert_eq!(array_list(&[5, 5, 6]), "5-6");
    }

    #[test]
    fn script_maps_indices_to_runs_and_quotes() {
        let s = script(
            Path::new("/opt/cc bin/cloudchamber"),
            Path::new("/data/it's.db"),
            Path::new("/x/s.toml"),
            &["train.steps=5".into()],
            &[(0, "aa".into()), (7, "bb".into())],
        );
        assert!(s.contains("  0) id=aa ;;\n  7) id=bb ;;\n"), "{s}");
        assert!(
            s.contains(
                "exec '/opt/cc bin/cloudchamber' --store '/data/it'\\''s.db' run-one '/x/s.toml' \
                 --index \"$SLURM_ARRAY_TASK_ID\" --expect-id \"$id\" --set 'train.steps=5'\n"
            ),
            "{s}"
        );
        // The script is valid bash, and an index outside the submission is refused.
        let out = Command::new("bash")
            .args(["-n", "-c", &s])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("bash")
            .args(["-c", &s])
            .env("SLURM_ARRAY_TASK_ID", "3")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no run for array index 3"));
    }
}
