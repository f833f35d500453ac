//! `pgincr backup`.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("pgincr backup is not available in this build yet")
}
