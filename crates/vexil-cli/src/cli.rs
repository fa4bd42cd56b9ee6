//! The command line, as clap derive types. Values that must be JSON are parsed here, so a bad
//! `--targeting` is a usage error (exit 2) before anything is sent.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// `vexil`: manage and evaluate Vexil feature flags from the command line.
#[derive(Debug, Parser)]
#[command(name = "vexil", version, about, propagate_version = true)]
pub struct Cli {
    /// The server's base URL [default: the profile's, else http://127.0.0.1:8080].
    #[arg(long, env = "VEXIL_URL", global = true)]
    pub url: Option<String>,
    /// A session or API token; wins over the profile's session.
    #[arg(long, env = "VEXIL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The login profile to use.
    #[arg(long, env = "VEXIL_PROFILE", global = true, default_value = "default")]
    pub profile: String,
    /// The namespace to work in.
    #[arg(
        short = 'n',
        long,
        env = "VEXIL_NAMESPACE",
        global = true,
        default_value = "default"
    )]
    pub namespace: String,
    /// Output format: aligned columns, or the server's JSON.
    #[arg(short = 'o', long, value_enum, global = true, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for lists, `field: value` lines for one resource.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in and save the session in the profile.
    Login(Login),
    /// Forget the profile's session.
    Logout,
    /// Show login profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Namespaces.
    #[command(subcommand, name = "ns", alias = "namespace")]
    Ns(NsCmd),
    /// Flags of the namespace.
    #[command(subcommand)]
    Flag(FlagCmd),
    /// Segments (reusable rules) of the namespace.
    #[command(subcommand)]
    Segment(SegmentCmd),
    /// Dynamic configuration: JSON values under keys, each optionally held to a JSON Schema,
    /// versioned.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Import a flagd file (JSON, or YAML by extension) into the namespace.
    Import(Import),
    /// Print the namespace as a flagd file.
    Export(Export),
    /// Evaluate one flag, or all of them, against a context.
    Eval(Eval),
    /// Stream the namespace's changes as JSON lines (WebSocket), until Ctrl-C.
    Watch(Watch),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Users.
    #[command(subcommand)]
    User(UserCmd),
    /// Roles (sets of permissions).
    #[command(subcommand)]
    Role(RoleCmd),
    /// Role bindings (subject → role, in a namespace or `*`).
    #[command(subcommand)]
    Binding(BindingCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `vexil login`.
#[derive(Debug, Args)]
pub struct Login {
    /// The user to sign in as.
    #[arg(short, long, default_value = "admin")]
    pub username: String,
    /// Read the password from standard input (else from $VEXIL_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
}

/// `vexil profile`.
#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Show the selected profile.
    Show,
    /// List every profile.
    List,
}

/// Where a resource's JSON comes from instead of option flags.
#[derive(Debug, Args)]
pub struct FileArg {
    /// Read the JSON body from FILE (`-` for standard input).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<String>,
}

/// An expected version: sent as `If-Match`, so a stale write is refused.
#[derive(Debug, Args)]
pub struct IfVersion {
    /// Only write if the resource is still at this version (If-Match).
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
}

/// `vexil ns`.
#[derive(Debug, Subcommand)]
pub enum NsCmd {
    /// List namespaces.
    List,
    /// Show one namespace.
    Get {
        /// Its key.
        key: String,
    },
    /// Create a namespace.
    Create {
        /// Its key.
        key: String,
        #[command(flatten)]
        fields: NsFields,
        #[command(flatten)]
        file: FileArg,
    },
    /// Change a namespace (only the fields given; or replace it with --file).
    Update {
        /// Its key.
        key: String,
        #[command(flatten)]
        fields: NsFields,
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        version: IfVersion,
    },
    /// Delete a namespace.
    Delete {
        /// Its key.
        key: String,
        #[command(flatten)]
        version: IfVersion,
    },
}

/// Namespace fields given as options.
#[derive(Debug, Args)]
#[group(id = "ns_fields", multiple = true, conflicts_with = "file")]
pub struct NsFields {
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// Static evaluation context merged under every request's (a JSON object).
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    pub context: Option<Value>,
    /// Let callers without credentials evaluate flags here.
    #[arg(long, value_name = "BOOL")]
    pub anonymous_evaluation: Option<bool>,
}

/// `vexil flag`.
#[derive(Debug, Subcommand)]
pub enum FlagCmd {
    /// List flags.
    List {
        /// Only flags with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only flags whose key or name contains this text.
        #[arg(short, long)]
        query: Option<String>,
        /// At most this many per page.
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this cursor (from a previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow the cursor through every page.
        #[arg(long, conflicts_with = "cursor")]
        all: bool,
    },
    /// Show one flag.
    Get {
        /// Its key.
        key: String,
    },
    /// Create a flag from options or --file. Without --variant, it is a boolean flag with
    /// variants on=true and off=false, serving `off`.
    Create {
        /// Its key (optional with --file when the file names it).
        key: Option<String>,
        #[command(flatten)]
        fields: FlagFields,
        #[command(flatten)]
        file: FileArg,
        /// Store targeting that does not compile (it answers PARSE_ERROR, as flagd does).
        #[arg(long)]
        allow_invalid_targeting: bool,
    },
    /// Replace a flag (--file), or change the fields given as options.
    Update {
        /// Its key.
        key: String,
        #[command(flatten)]
        fields: FlagFields,
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        version: IfVersion,
        /// Store targeting that does not compile.
        #[arg(long)]
        allow_invalid_targeting: bool,
    },
    /// Apply a JSON merge patch (RFC 7386) from --file, or built from the options (variants
    /// and metadata are merged key by key).
    Patch {
        /// Its key.
        key: String,
        #[command(flatten)]
        fields: FlagFields,
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        version: IfVersion,
        /// Store targeting that does not compile.
        #[arg(long)]
        allow_invalid_targeting: bool,
    },
    /// Delete a flag.
    Delete {
        /// Its key.
        key: String,
        #[command(flatten)]
        version: IfVersion,
    },
    /// Serve the flag (state ENABLED).
    Enable {
        /// Its key.
        key: String,
    },
    /// Kill switch: stop serving the flag (state DISABLED).
    Disable {
        /// Its key.
        key: String,
    },
    /// Who created, changed, enabled, disabled or deleted the flag, oldest first.
    History {
        /// Its key.
        key: String,
        #[command(flatten)]
        page: SeqPage,
    },
}

/// A page of events by sequence number.
#[derive(Debug, Args)]
pub struct SeqPage {
    /// Only events after this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// Flag fields given as options.
#[derive(Debug, Args)]
#[group(id = "flag_fields", multiple = true, conflicts_with = "file")]
pub struct FlagFields {
    /// A variant, NAME=VALUE; VALUE is JSON (true, 3, "x", {...}), or else a plain string.
    #[arg(long = "variant", value_name = "NAME=VALUE", value_parser = key_json)]
    pub variants: Vec<(String, Value)>,
    /// The default variant (`null` for the caller's code default).
    #[arg(long = "default", value_name = "VARIANT")]
    pub default_variant: Option<String>,
    /// ENABLED or DISABLED.
    #[arg(long, value_enum, ignore_case = true)]
    pub state: Option<FlagState>,
    /// JsonLogic targeting (JSON; `null` removes it).
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub targeting: Option<Value>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// A tag (repeat for several; replaces the list).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Metadata, KEY=VALUE (VALUE as for --variant).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_json)]
    pub metadata: Vec<(String, Value)>,
}

/// A flag's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlagState {
    /// Served.
    #[value(name = "ENABLED")]
    Enabled,
    /// Not served: callers get their code default.
    #[value(name = "DISABLED")]
    Disabled,
}

impl FlagState {
    /// flagd's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagState::Enabled => "ENABLED",
            FlagState::Disabled => "DISABLED",
        }
    }
}

/// `vexil segment`.
#[derive(Debug, Subcommand)]
pub enum SegmentCmd {
    /// List segments.
    List,
    /// Show one segment.
    Get {
        /// Its key.
        key: String,
    },
    /// Create a segment.
    Create {
        /// Its key.
        key: Option<String>,
        #[command(flatten)]
        fields: SegmentFields,
        #[command(flatten)]
        file: FileArg,
    },
    /// Replace a segment (--file), or change the fields given as options.
    Update {
        /// Its key.
        key: String,
        #[command(flatten)]
        fields: SegmentFields,
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        version: IfVersion,
    },
    /// Delete a segment.
    Delete {
        /// Its key.
        key: String,
        #[command(flatten)]
        version: IfVersion,
    },
}

/// Segment fields given as options.
#[derive(Debug, Args)]
#[group(id = "segment_fields", multiple = true, conflicts_with = "file")]
pub struct SegmentFields {
    /// The JsonLogic rule.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub rule: Option<Value>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
}

/// `vexil import`.
#[derive(Debug, Args)]
pub struct Import {
    /// The flagd file (`-` for standard input); `.yaml`/`.yml` is sent as YAML.
    pub file: String,
    /// Report what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// merge: add and change flags; replace: also delete flags the file lacks.
    #[arg(long, value_enum, default_value_t = ImportMode::Merge)]
    pub mode: ImportMode,
    /// The file's format [default: by extension, JSON for standard input].
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
}

/// Import modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportMode {
    /// Add and change.
    Merge,
    /// Make the namespace equal to the file.
    Replace,
}

/// flagd file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `vexil export`.
#[derive(Debug, Args)]
pub struct Export {
    /// The format to write.
    #[arg(long, value_enum, default_value_t = FileFormat::Json)]
    pub format: FileFormat,
}

/// `vexil eval`.
#[derive(Debug, Args)]
pub struct Eval {
    /// The flag; every flag of the namespace when absent.
    pub flag: Option<String>,
    /// The evaluation context, a JSON object.
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    pub context: Option<Value>,
    /// One context attribute, KEY=VALUE (VALUE is JSON, or else a string); applied over
    /// --context.
    #[arg(long = "ctx", value_name = "KEY=VALUE", value_parser = key_json)]
    pub ctx: Vec<(String, Value)>,
    /// Sets `targetingKey`.
    #[arg(short = 'k', long)]
    pub targeting_key: Option<String>,
    /// Show the rule as evaluated, what it returned and why.
    #[arg(long, requires = "flag")]
    pub explain: bool,
}

/// `vexil watch`.
#[derive(Debug, Args)]
pub struct Watch {
    /// Resume after this revision (the server replays what came after it); without it the
    /// stream starts with a snapshot.
    #[arg(long, value_name = "N")]
    pub from_revision: Option<u64>,
    /// Exit after this many `change` frames.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `vexil audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Query the audit log, oldest first.
    List {
        #[command(flatten)]
        filter: AuditFilter,
        /// At most this many events.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Write every matching event as JSON lines (NDJSON), oldest first, streamed as the
    /// server sends them. If the stream is cut short, only whole events are written and the
    /// error names the `--after` that resumes it.
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// Write to FILE instead of standard output (`-o` is the output format).
        #[arg(long, value_name = "FILE")]
        output_file: Option<String>,
    },
    /// Check the hash chain of the whole log; exits 4 when it is broken.
    Verify,
}

/// Which audit events.
#[derive(Debug, Args)]
pub struct AuditFilter {
    /// Only events of this namespace.
    #[arg(long = "ns", value_name = "NAMESPACE")]
    pub ns: Option<String>,
    /// Only events about this kind of resource (namespace, flag, segment, user, role,
    /// binding, token, config).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events about this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only events after this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
}

/// `vexil config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// List the namespace's entries.
    List,
    /// Show one entry.
    Get {
        /// Its key.
        key: String,
        /// Print only the value, as compact JSON on one line (for scripts).
        #[arg(long)]
        value_only: bool,
    },
    /// Create an entry or write its next version. An absent --schema or --description keeps
    /// the current one.
    Set(ConfigSet),
    /// Delete an entry.
    Delete {
        /// Its key.
        key: String,
        #[command(flatten)]
        version: IfVersion,
    },
    /// An entry's versions, oldest first.
    Versions {
        /// Its key.
        key: String,
        /// Only versions after this one.
        #[arg(long, value_name = "N")]
        after: Option<u64>,
        /// At most this many versions.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Write an earlier version's value, schema and description as the next version.
    Rollback {
        /// Its key.
        key: String,
        /// The version to go back to.
        #[arg(long, value_name = "N")]
        to: u64,
        #[command(flatten)]
        version: IfVersion,
    },
}

/// `vexil config set`.
#[derive(Debug, Args)]
pub struct ConfigSet {
    /// Its key.
    pub key: String,
    /// The value, as JSON (`'"text"'` for a string).
    #[arg(long, value_name = "JSON", value_parser = json_value, required_unless_present = "file")]
    pub value: Option<Value>,
    /// Read the value from FILE (`-` for standard input); the file holds the value itself.
    #[arg(short, long, value_name = "FILE", conflicts_with = "value")]
    pub file: Option<String>,
    /// A JSON Schema every value must satisfy.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub schema: Option<Value>,
    /// Read the JSON Schema from FILE (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "schema")]
    pub schema_file: Option<String>,
    /// Remove the entry's schema.
    #[arg(long, conflicts_with_all = ["schema", "schema_file"])]
    pub no_schema: bool,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub version: IfVersion,
    /// Only create: fail with 409 if the entry exists (If-None-Match: *).
    #[arg(long, conflicts_with = "if_version")]
    pub create_only: bool,
}

/// Where a new password comes from.
#[derive(Debug, Args)]
pub struct PasswordArg {
    /// Read the password from standard input (else from $VEXIL_NEW_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
}

/// `vexil user`.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List users.
    List,
    /// Create a user.
    Create {
        /// Login name.
        name: String,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        password: PasswordArg,
    },
    /// Delete a user.
    Delete {
        /// Login name.
        name: String,
    },
    /// Set a user's password (ends its older sessions).
    Passwd {
        /// Login name.
        name: String,
        #[command(flatten)]
        password: PasswordArg,
    },
}

/// `vexil role`.
#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// List roles.
    List,
    /// Show one role.
    Get {
        /// Its name.
        name: String,
    },
    /// Create a custom role.
    Create {
        /// Its name.
        name: String,
        /// A permission (flag:read, flag:write, config:read, config:write, audit:read,
        /// rbac:admin, evaluate); repeat for several.
        #[arg(long = "permission", short = 'p', required = true)]
        permissions: Vec<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a custom role.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `vexil binding`.
#[derive(Debug, Subcommand)]
pub enum BindingCmd {
    /// List bindings.
    List,
    /// Bind a role to a user or token.
    Create {
        /// `user:<name>` or `token:<id>`.
        #[arg(long)]
        subject: String,
        /// The role.
        #[arg(long)]
        role: String,
        /// Where it applies: a namespace key or `*` [default: the --namespace].
        #[arg(long)]
        scope: Option<String>,
    },
    /// Delete a binding.
    Delete {
        /// Its id.
        id: String,
    },
}

/// `vexil token`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List API tokens (never their secrets).
    List,
    /// Issue an API token; its secret is printed once.
    Create {
        /// A label.
        name: String,
        /// The role it carries.
        #[arg(long)]
        role: String,
        /// Where it applies: a namespace key or `*` [default: the --namespace].
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. 30m, 12h, 90d [default: never expires].
        #[arg(long, value_name = "DURATION", value_parser = duration_ms)]
        expires_in: Option<i64>,
    },
    /// Revoke an API token.
    Revoke {
        /// Its id.
        id: String,
    },
}

fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn json_object(s: &str) -> Result<Value, String> {
    match json_value(s)? {
        v @ Value::Object(_) => Ok(v),
        _ => Err("expected a JSON object".to_owned()),
    }
}

/// `KEY=VALUE`, VALUE read as JSON when it is JSON and as a plain string otherwise, so
/// `tier=gold` and `age=42` both do what one means (`id='"42"'` forces a string).
fn key_json(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err("the KEY of KEY=VALUE is empty".to_owned());
    }
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

/// `90d`, `12h`, `30m`, `45s` → milliseconds.
fn duration_ms(s: &str) -> Result<i64, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit: s, m, h or d"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_value_pairs_read_json_and_fall_back_to_strings() {
        assert_eq!(key_json("on=true"), Ok(("on".to_owned(), json!(true))));
        assert_eq!(
            key_json("tier=gold"),
            Ok(("tier".to_owned(), json!("gold")))
        );
        assert_eq!(key_json("id=\"42\""), Ok(("id".to_owned(), json!("42"))));
        assert!(key_json("novalue").is_err());
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(duration_ms("90d"), Ok(90 * 86_400_000));
        assert_eq!(duration_ms("30m"), Ok(1_800_000));
        assert!(duration_ms("30").is_err());
        assert!(duration_ms("0s").is_err());
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
