//! Random reads with `fio`: the job's command line, and the read IOPS from its terse output.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A random-read job: `readers` processes reading 4 KiB blocks of one existing file, each from
/// its own slice of it (so no reader hits pages another one brought into the cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandRead {
    /// Number of parallel readers.
    pub readers: u32,
    /// Size of the file, in bytes.
    pub file_size: u64,
    /// Seconds measured (after one second of warm-up).
    pub seconds: u32,
}

impl RandRead {
    /// fio's arguments for reading `file`.
    pub fn args(&self, file: &Path) -> Vec<String> {
        let slice = self.file_size / u64::from(self.readers.max(1));
        vec![
            "--name=randread".into(),
            format!("--filename={}", file.display()),
            "--readonly".into(),
            "--rw=randread".into(),
            "--bs=4k".into(),
            "--ioengine=psync".into(),
            format!("--numjobs={}", self.readers),
            format!("--size={slice}"),
            format!("--offset_increment={slice}"),
            "--randrepeat=0".into(),
            "--invalidate=1".into(),
            "--group_reporting".into(),
            "--time_based".into(),
            "--ramp_time=1".into(),
            format!("--runtime={}", self.seconds),
            "--output-format=terse".into(),
            "--terse-version=3".into(),
        ]
    }

    /// Runs the job and returns the read IOPS of all readers together.
    pub fn run(&self, file: &Path) -> anyhow::Result<f64> {
        let output = Command::new("fio")
            .args(self.args(file))
            .stdin(Stdio::null())
            .output()
            .context("running fio (package fio)")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "fio failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                stdout.trim()
            );
        }
        parse_read_iops(&stdout)
    }
}

/// The read IOPS in fio's terse (version 3) output: field 8 of the job's line, which starts with
/// `3;fio-VERSION;JOBNAME;GROUP;ERROR;read_kb;read_bw;read_iops;...`. Fails if the job reports an
/// error or read nothing.
pub fn parse_read_iops(terse: &str) -> anyhow::Result<f64> {
    let line = terse
        .lines()
        .find(|l| l.starts_with("3;"))
        .with_context(|| format!("no terse v3 line in fio's output: {terse:?}"))?;
    let fields: Vec<&str> = line.split(';').collect();
    let field = |i: usize, what: &str| {
        fields
            .get(i)
            .with_context(|| format!("fio's terse line has no {what} field: {line:?}"))
    };
    let error: i64 = field(4, "error")?
        .parse()
        .with_context(|| format!("fio's error field is not a number: {line:?}"))?;
    if error != 0 {
        bail!("fio reported error {error}: {line:?}");
    }
    let iops: f64 = field(7, "read IOPS")?
        .parse()
        .with_context(|| format!("fio's read IOPS field is not a number: {line:?}"))?;
    let kib: u64 = field(5, "read KiB")?
        .parse()
        .with_context(|| format!("fio's read KiB field is not a number: {line:?}"))?;
    if kib == 0 {
        bail!("fio read nothing: {line:?}");
    }
    Ok(iops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "3;fio-3.33;randread;0;0;136036;135900;33975;1001;0;0;0.000000;\
                          0.000000;3;47;18.9;4.5;1.0%=12;5.0%=13\n";

    #[test]
    fn read_iops_come_from_field_eight() {
        assert_eq!(parse_read_iops(SAMPLE).expect("parse"), 33975.0);
    }

    #[test]
    fn errors_and_empty_runs_are_refused() {
        let errored = SAMPLE.replacen(";0;0;136036", ";0;5;136036", 1);
        assert!(format!("{:#}", parse_read_iops(&errored).unwrap_err()).contains("error 5"));
        let empty = SAMPLE.replacen("136036;135900;33975", "0;0;0", 1);
        assert!(parse_read_iops(&empty).is_err());
        assert!(parse_read_iops("fio: something went wrong\n").is_err());
    }

    #[test]
    fn each_reader_gets_its_own_slice() {
        let job = RandRead {
            readers: 4,
            file_size: 1 << 30,
            seconds: 8,
        };
        let args = job.args(Path::new("/m/f"));
        assert!(args.contains(&"--size=268435456".to_owned()));
        assert!(args.contains(&"--offset_increment=268435456".to_owned()));
        assert!(args.contains(&"--numjobs=4".to_owned()));
        assert!(args.contains(&"--filename=/m/f".to_owned()));
    }
}
