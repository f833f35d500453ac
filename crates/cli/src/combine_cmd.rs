//! `pgincr combine`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("pgincr combine is not available in this build yet")
}
