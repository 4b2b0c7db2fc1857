//! `ferry image export-criu IMAGE -o DIR`, `ferry image import-criu DIR -o IMAGE`, and
//! `ferry image inspect DIR` for a CRIU image directory (the work is in `ferry-criu`).

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Ferry image.
    image: PathBuf,
    /// CRIU image directory to write (made if missing; must be empty).
    #[arg(short, long)]
    output: PathBuf,
    /// Refuse, writing nothing, when anything cannot be expressed in CRIU's tables.
    #[arg(long)]
    strict: bool,
    /// The key of a sealed image (the CRIU directory written is not sealed).
    #[arg(long, value_name = "KEYFILE")]
    key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// CRIU image directory.
    dir: PathBuf,
    /// Ferry image to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Refuse, writing nothing, when anything cannot be expressed in Ferry's model.
    #[arg(long)]
    strict: bool,
}

fn warn(report: &ferry_criu::Report) {
    for l in &report.losses {
        eprintln!("ferry: warning: not carried: {l}");
    }
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let key = crate::key::load(a.key.as_deref())?;
    let report = ferry_criu::export_with_key(&a.image, &a.output, a.strict, key.as_ref())
        .with_context(|| format!("export {} to {}", a.image.display(), a.output.display()))?;
    warn(&report);
    crate::write_stdout(&format!(
        "exported {} to {}: {} files, {} things not carried\n",
        a.image.display(),
        a.output.display(),
        report.files.len(),
        report.losses.len()
    ))
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let report = ferry_criu::import(&a.dir, &a.output, a.strict)
        .with_context(|| format!("import {} to {}", a.dir.display(), a.output.display()))?;
    warn(&report);
    crate::write_stdout(&format!(
        "imported {} to {}: {} things not carried\n",
        a.dir.display(),
        a.output.display(),
        report.losses.len()
    ))
}

pub fn inspect(dir: &Path, json: bool) -> anyhow::Result<()> {
    let text =
        ferry_criu::summarize(dir, json).with_context(|| format!("inspect {}", dir.display()))?;
    crate::write_stdout(&text)
}
