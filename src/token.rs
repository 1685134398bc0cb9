//! `tally token new`: makes an access token and the `[auth]` line that admits it.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use tally_api::auth::Role;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token and the `[auth] tokens` entry (with its SHA-256, never the
    /// token) to add to every node's config.
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// A name for the token, shown in logs and error messages.
    #[arg(long)]
    pub name: String,
    /// Roles: ingest, read, admin (repeat the flag or separate with commas).
    #[arg(long = "role", required = true, value_delimiter = ',')]
    pub roles: Vec<Role>,
    /// Confine the token to one tenant's events and rows.
    #[arg(long)]
    pub tenant: Option<String>,
}

pub fn run(cmd: TokenCommand) -> Result<()> {
    let TokenCommand::New(args) = cmd;
    let (token, line) = new_entry(&args)?;
    // stdout: the token, then the config line (easy to capture); stderr: what to do.
    println!("{token}");
    println!("{line}");
    eprintln!(
        "Give the token (first line) to its user, who sends it as `Authorization: Bearer …`\n\
         (the CLI reads --token or TALLY_TOKEN). Add the second line to `tokens = [ … ]` under\n\
         [auth] in every node's config and restart them. Tally keeps only the hash: a lost\n\
         token cannot be recovered, only replaced."
    );
    Ok(())
}

fn new_entry(args: &NewArgs) -> Result<(String, String)> {
    let name = args.name.trim();
    if name.is_empty() {
        bail!("--name must not be empty");
    }
    if args
        .tenant
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 256)
    {
        bail!("--tenant must be 1 to 256 characters");
    }
    let (token, sha256) = tally_api::auth::new_token();
    let mut roles: Vec<&str> = Vec::new();
    for role in &args.roles {
        if !roles.contains(&role.as_str()) {
            roles.push(role.as_str());
        }
    }
    let quoted: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    let mut line = format!(
        "{{ name = {}, sha256 = \"{sha256}\", roles = [{}]",
        toml_string(name),
        quoted.join(", ")
    );
    if let Some(tenant) = &args.tenant {
        line.push_str(&format!(", tenant = {}", toml_string(tenant)));
    }
    line.push_str(" },");
    Ok((token, line))
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_line_is_a_token_entry_the_config_accepts() {
        let args = NewArgs {
            name: "gw \"eu\"".into(),
            roles: vec![Role::Ingest, Role::Read, Role::Ingest],
            tenant: Some("acme.com".into()),
        };
        let (token, line) = new_entry(&args).unwrap();
        let config = format!("[auth]\ntokens = [\n  {line}\n]\n");
        let parsed: crate::config::FileConfig = toml::from_str(&config).unwrap();
        let entry = &parsed.auth.tokens[0];
        assert_eq!(entry.name, "gw \"eu\"");
        assert_eq!(entry.roles, ["ingest", "read"]);
        assert_eq!(entry.tenant.as_deref(), Some("acme.com"));
        let hash = tally_api::auth::parse_sha256(&entry.sha256).unwrap();
        use sha2::Digest;
        assert_eq!(
            hash,
            <[u8; 32]>::from(sha2::Sha256::digest(token.as_bytes()))
        );
        assert!(
            !line.contains(&token),
            "the config line never holds the token"
        );
    }
}
