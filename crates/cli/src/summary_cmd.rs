//! `pgincr summary`.

#[derive(clap::Subcommand)]
pub enum Command {}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {}
}
