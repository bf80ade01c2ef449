use crate::config::Settings;

pub fn print(settings: &Settings) -> anyhow::Result<()> {
    print!("{}", settings.to_masked_toml());
    Ok(())
}
