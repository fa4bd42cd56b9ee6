//! What each subcommand does: build the request, send it, print the answer.

use std::io::Read;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::cli::{
    AuditCmd, AuditFilter, BindingCmd, Cli, Command, ConfigCmd, ConfigSet, Eval, Export, FileArg,
    FileFormat, FlagCmd, FlagFields, FlagState, Import, ImportMode, NsCmd, NsFields, Output,
    PasswordArg, ProfileCmd, RoleCmd, SegmentCmd, SegmentFields, TokenCmd, UserCmd,
};
use crate::client::{Call, Client};
use crate::config::{self, Profile};
use crate::output::{
    Column, Out, describe, field, items, json_field, table, text, time, time_field,
};

/// The server URL when neither --url, $VEXIL_URL nor the profile names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Everything a command needs: the client, the namespace, where to print.
#[derive(Debug)]
struct Ctx {
    client: Client,
    ns: String,
    out: Out,
}

/// Resolves the URL and credential (flag > environment > profile), then runs the command.
pub(crate) async fn dispatch(cli: Cli) -> Result<(), Error> {
    let out = Out { format: cli.output };
    let config_path = config::path();
    let profile = match &config_path {
        Ok(p) => config::load(p)?.profiles.remove(&cli.profile),
        // No place for profiles is only an error for the commands that need one.
        Err(_) => None,
    };
    let url = cli
        .url
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = cli
        .token
        .clone()
        .or_else(|| profile.as_ref().and_then(|p| p.token.clone()));
    match cli.command {
        Command::Login(l) => {
            let path = config_path?;
            login(
                &path,
                &cli.profile,
                &url,
                &l.username,
                l.password_stdin,
                out,
            )
            .await
        }
        Command::Logout => logout(&config_path?, &cli.profile, out),
        Command::Profile(p) => show_profiles(&config_path?, &cli.profile, p, out),
        Command::Completions { shell } => completions(shell),
        command => {
            let ctx = Ctx {
                client: Client::new(&url, token)?,
                ns: cli.namespace,
                out,
            };
            run(&ctx, command).await
        }
    }
}

async fn run(ctx: &Ctx, command: Command) -> Result<(), Error> {
    match command {
        Command::Ns(c) => namespaces(ctx, c).await,
        Command::Flag(c) => flags(ctx, c).await,
        Command::Segment(c) => segments(ctx, c).await,
        Command::Config(c) => configs(ctx, c).await,
        Command::Import(i) => import(ctx, i).await,
        Command::Export(e) => export(ctx, e).await,
        Command::Eval(e) => eval(ctx, e).await,
        Command::Watch(w) => crate::watch::watch(&ctx.client, &ctx.ns, &w).await,
        Command::Audit(c) => audit(ctx, c).await,
        Command::User(c) => users(ctx, c).await,
        Command::Role(c) => roles(ctx, c).await,
        Command::Binding(c) => bindings(ctx, c).await,
        Command::Token(c) => tokens(ctx, c).await,
        Command::Login(_) | Command::Logout | Command::Profile(_) | Command::Completions { .. } => {
            Ok(())
        }
    }
}

// ---- profiles ----------------------------------------------------------------------------

async fn login(
    path: &std::path::Path,
    profile: &str,
    url: &str,
    username: &str,
    password_stdin: bool,
    out: Out,
) -> Result<(), Error> {
    let password = password(password_stdin, "VEXIL_PASSWORD")?;
    let client = Client::new(url, None)?;
    let session = client
        .json(
            Call::api(Method::POST, &["auth", "login"])
                .json(json!({"username": username, "password": password})),
        )
        .await?;
    let token = session
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Protocol {
            url: url.to_owned(),
            reason: "the login answer has no token".to_owned(),
        })?;
    let mut config = config::load(path)?;
    config.profiles.insert(
        profile.to_owned(),
        Profile {
            url: client.base().as_str().trim_end_matches('/').to_owned(),
            token: Some(token.to_owned()),
            username: Some(username.to_owned()),
            expires_at: session.get("expiresAt").and_then(Value::as_i64),
        },
    );
    config::save(path, &config)?;
    out.done(&format!(
        "signed in to {url} as {username} (profile {profile}, saved in {})",
        path.display()
    ))
}

fn logout(path: &std::path::Path, profile: &str, out: Out) -> Result<(), Error> {
    let mut config = config::load(path)?;
    let Some(p) = config.profiles.get_mut(profile) else {
        return out.done(&format!("profile {profile} holds no session"));
    };
    // Keep the URL: the next `login` on this profile goes to the same server.
    p.token = None;
    p.username = None;
    p.expires_at = None;
    config::save(path, &config)?;
    out.done(&format!("signed out (profile {profile})"))
}

fn profile_json(name: &str, p: &Profile, path: &std::path::Path) -> Value {
    json!({
        "profile": name,
        "url": p.url,
        "username": p.username,
        "signedIn": p.token.is_some(),
        "expiresAt": p.expires_at,
        "config": path.display().to_string(),
    })
}

fn show_profiles(
    path: &std::path::Path,
    selected: &str,
    cmd: ProfileCmd,
    out: Out,
) -> Result<(), Error> {
    let config = config::load(path)?;
    match cmd {
        ProfileCmd::Show => {
            let p = config.profiles.get(selected).ok_or_else(|| {
                Error::Usage(format!(
                    "no profile {selected} in {}; run `vexil login` first",
                    path.display()
                ))
            })?;
            out.one(&profile_json(selected, p, path))
        }
        ProfileCmd::List => {
            let list = json!({"items": config
                .profiles
                .iter()
                .map(|(n, p)| profile_json(n, p, path))
                .collect::<Vec<_>>()});
            out.list(
                &list,
                &[
                    ("PROFILE", |r| field(r, "profile")),
                    ("URL", |r| field(r, "url")),
                    ("USER", |r| field(r, "username")),
                    ("EXPIRES", |r| time_field(r, "expiresAt")),
                ],
            )
        }
    }
}

fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    use clap::CommandFactory;
    // Into a buffer first: `generate` cannot report a write error (a closed pipe) otherwise.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vexil", &mut buf);
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, &buf)
        .map_err(Error::io("cannot write to standard output"))
}

// ---- inputs ------------------------------------------------------------------------------

/// A file's bytes, or standard input's for `-`.
fn read_input(path: &str) -> Result<Vec<u8>, Error> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(Error::io("cannot read standard input"))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(Error::io(format!("cannot read {path}")))
}

/// What a path names in messages.
fn input_name(path: &str) -> &str {
    if path == "-" { "standard input" } else { path }
}

/// A file that must hold JSON.
fn read_json(path: &str) -> Result<Value, Error> {
    serde_json::from_slice(&read_input(path)?)
        .map_err(|e| Error::Usage(format!("{} is not valid JSON: {e}", input_name(path))))
}

/// A file that must hold a JSON object.
fn read_json_object(path: &str) -> Result<Map<String, Value>, Error> {
    match read_json(path)? {
        Value::Object(m) => Ok(m),
        _ => Err(Error::Usage(format!(
            "{} does not hold a JSON object",
            input_name(path)
        ))),
    }
}

/// A password from standard input (first line) or an environment variable; never from the
/// command line, where other users could read it in the process list.
fn password(stdin: bool, var: &str) -> Result<String, Error> {
    let raw = if stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(Error::io("cannot read the password from standard input"))?;
        s.lines().next().unwrap_or_default().to_owned()
    } else {
        std::env::var(var).map_err(|_| {
            Error::Usage(format!(
                "no password: pipe it with --password-stdin, or set ${var}"
            ))
        })?
    };
    if raw.is_empty() {
        return Err(Error::Usage("the password is empty".to_owned()));
    }
    Ok(raw)
}

// ---- create / update, shared by namespaces, flags and segments ----------------------------

/// A resource kind with a collection under `/api/v1` and a key field.
struct Kind<'a> {
    /// For messages.
    noun: &'static str,
    /// The collection's path segments.
    collection: Vec<&'a str>,
    /// The fields its input schema accepts (read-only fields of a GET answer are dropped
    /// before a PUT, so a read-modify-write sends exactly an input).
    input_fields: &'static [&'static str],
}

impl<'a> Kind<'a> {
    fn namespace() -> Self {
        Kind {
            noun: "namespace",
            collection: vec!["namespaces"],
            input_fields: &[
                "key",
                "name",
                "description",
                "evaluationContext",
                "anonymousEvaluation",
            ],
        }
    }

    fn flag(ns: &'a str) -> Self {
        Kind {
            noun: "flag",
            collection: vec!["namespaces", ns, "flags"],
            input_fields: &[
                "key",
                "name",
                "description",
                "tags",
                "state",
                "variants",
                "defaultVariant",
                "targeting",
                "metadata",
            ],
        }
    }

    fn segment(ns: &'a str) -> Self {
        Kind {
            noun: "segment",
            collection: vec!["namespaces", ns, "segments"],
            input_fields: &["key", "description", "rule"],
        }
    }

    fn config(ns: &'a str) -> Self {
        Kind {
            noun: "config",
            collection: vec!["namespaces", ns, "configs"],
            input_fields: &["key", "value", "schema", "description"],
        }
    }

    fn item(&self, key: &'a str) -> Vec<&'a str> {
        let mut s = self.collection.clone();
        s.push(key);
        s
    }

    /// A route under one resource, e.g. `…/flags/{key}/history`.
    fn sub(&self, key: &'a str, route: &'a str) -> Vec<&'a str> {
        let mut s = self.item(key);
        s.push(route);
        s
    }
}

/// The body of a create: the file, or the options over `defaults`; the positional key wins
/// over none, and must agree with the file's.
fn create_body(
    kind: &Kind<'_>,
    key: Option<&str>,
    file: &FileArg,
    defaults: Map<String, Value>,
    apply: impl FnOnce(&mut Map<String, Value>),
) -> Result<Value, Error> {
    let mut body = match &file.file {
        Some(f) => read_json_object(f)?,
        None => {
            let mut m = defaults;
            apply(&mut m);
            m
        }
    };
    match (key, body.get("key").and_then(Value::as_str)) {
        (Some(k), Some(in_file)) if k != in_file => {
            return Err(Error::Usage(format!(
                "the {} key {k} differs from the file's key {in_file}",
                kind.noun
            )));
        }
        (Some(k), _) => {
            body.insert("key".to_owned(), json!(k));
        }
        (None, Some(_)) => {}
        (None, None) => {
            return Err(Error::Usage(format!(
                "name the {} to create: give its KEY, or a file with a \"key\"",
                kind.noun
            )));
        }
    }
    Ok(Value::Object(body))
}

async fn create(ctx: &Ctx, kind: &Kind<'_>, body: Value, query: Option<bool>) -> Result<(), Error> {
    let created = ctx
        .client
        .json(
            Call::api(Method::POST, &kind.collection)
                .query("allowInvalidTargeting", query.filter(|q| *q))
                .json(body),
        )
        .await?;
    ctx.out.one(&created)
}

/// PUT a replacement from a file, or read-modify-write the fields given as options. The
/// read-modify-write sends the version it read as If-Match (or --if-version when given), so
/// a change made in between is never overwritten.
async fn update(
    ctx: &Ctx,
    kind: &Kind<'_>,
    key: &str,
    file: &FileArg,
    if_version: Option<u64>,
    allow_invalid_targeting: bool,
    apply: impl FnOnce(&mut Map<String, Value>) -> bool,
) -> Result<(), Error> {
    let path = kind.item(key);
    let (body, expected) = match &file.file {
        Some(f) => (read_json_object(f)?, if_version),
        None => {
            let current = ctx.client.json(Call::api(Method::GET, &path)).await?;
            let mut body: Map<String, Value> = current
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| kind.input_fields.contains(&k.as_str()) && !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !apply(&mut body) {
                return Err(Error::Usage(format!(
                    "nothing to change: give the {} fields to set, or --file",
                    kind.noun
                )));
            }
            // A PUT has no "remove" value: an option set to null (e.g. `--targeting null`)
            // removes the field.
            body.retain(|_, v| !v.is_null());
            let read = current.get("version").and_then(Value::as_u64);
            (body, if_version.or(read))
        }
    };
    let updated = ctx
        .client
        .json(
            Call::api(Method::PUT, &path)
                .query(
                    "allowInvalidTargeting",
                    Some(true).filter(|_| allow_invalid_targeting),
                )
                .if_version(expected)
                .json(Value::Object(body)),
        )
        .await?;
    ctx.out.one(&updated)
}

/// POSTs a JSON body and prints the resource created.
async fn post(ctx: &Ctx, segments: &[&str], body: Value) -> Result<(), Error> {
    let created = ctx
        .client
        .json(Call::api(Method::POST, segments).json(body))
        .await?;
    ctx.out.one(&created)
}

async fn get(ctx: &Ctx, segments: &[&str]) -> Result<(), Error> {
    let v = ctx.client.json(Call::api(Method::GET, segments)).await?;
    ctx.out.one(&v)
}

async fn delete(
    ctx: &Ctx,
    segments: &[&str],
    if_version: Option<u64>,
    what: &str,
) -> Result<(), Error> {
    ctx.client
        .send(Call::api(Method::DELETE, segments).if_version(if_version))
        .await?;
    ctx.out.done(&format!("deleted {what}"))
}

async fn list(ctx: &Ctx, segments: &[&str], columns: &[Column]) -> Result<(), Error> {
    let v = ctx.client.json(Call::api(Method::GET, segments)).await?;
    ctx.out.list(&v, columns)
}

fn set(m: &mut Map<String, Value>, k: &str, v: Option<Value>) -> bool {
    match v {
        Some(v) => {
            m.insert(k.to_owned(), v);
            true
        }
        None => false,
    }
}

fn pairs(p: &[(String, Value)]) -> Option<Value> {
    (!p.is_empty()).then(|| Value::Object(p.iter().cloned().collect()))
}

// ---- namespaces --------------------------------------------------------------------------

impl NsFields {
    fn apply(&self, m: &mut Map<String, Value>) -> bool {
        let mut changed = set(m, "name", self.name.clone().map(Value::from));
        changed |= set(m, "description", self.description.clone().map(Value::from));
        changed |= set(m, "evaluationContext", self.context.clone());
        changed |= set(
            m,
            "anonymousEvaluation",
            self.anonymous_evaluation.map(Value::from),
        );
        changed
    }
}

async fn namespaces(ctx: &Ctx, cmd: NsCmd) -> Result<(), Error> {
    let kind = Kind::namespace();
    match cmd {
        NsCmd::List => {
            list(
                ctx,
                &kind.collection,
                &[
                    ("KEY", |r| field(r, "key")),
                    ("NAME", |r| field(r, "name")),
                    ("VERSION", |r| field(r, "version")),
                    ("DESCRIPTION", |r| field(r, "description")),
                ],
            )
            .await
        }
        NsCmd::Get { key } => get(ctx, &kind.item(&key)).await,
        NsCmd::Create { key, fields, file } => {
            let body = create_body(&kind, Some(&key), &file, Map::new(), |m| {
                fields.apply(m);
            })?;
            create(ctx, &kind, body, None).await
        }
        NsCmd::Update {
            key,
            fields,
            file,
            version,
        } => {
            update(ctx, &kind, &key, &file, version.if_version, false, |m| {
                fields.apply(m)
            })
            .await
        }
        NsCmd::Delete { key, version } => {
            delete(
                ctx,
                &kind.item(&key),
                version.if_version,
                &format!("namespace {key}"),
            )
            .await
        }
    }
}

// ---- flags -------------------------------------------------------------------------------

impl FlagFields {
    /// Sets the fields given; the same for a create, a PUT and a merge patch (where a
    /// variants or metadata object is merged key by key by the server).
    fn apply(&self, m: &mut Map<String, Value>) -> bool {
        let mut changed = set(m, "variants", pairs(&self.variants));
        changed |= set(
            m,
            "defaultVariant",
            self.default_variant.clone().map(Value::from),
        );
        changed |= set(m, "state", self.state.map(|s| Value::from(s.as_str())));
        changed |= set(m, "targeting", self.targeting.clone());
        changed |= set(m, "name", self.name.clone().map(Value::from));
        changed |= set(m, "description", self.description.clone().map(Value::from));
        changed |= set(m, "tags", (!self.tags.is_empty()).then(|| json!(self.tags)));
        changed |= set(m, "metadata", pairs(&self.metadata));
        changed
    }
}

const FLAG_COLUMNS: &[Column] = &[
    ("KEY", |r| field(r, "key")),
    ("STATE", |r| field(r, "state")),
    ("DEFAULT", |r| field(r, "defaultVariant")),
    ("VARIANTS", |r| {
        r.get("variants")
            .and_then(Value::as_object)
            .map(|v| v.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    }),
    ("TARGETING", |r| {
        let has = r
            .get("targeting")
            .is_some_and(|t| !t.is_null() && t.as_object().is_none_or(|o| !o.is_empty()));
        if has { "yes" } else { "no" }.to_owned()
    }),
    ("VERSION", |r| field(r, "version")),
    ("TAGS", |r| {
        r.get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    }),
];

async fn flags(ctx: &Ctx, cmd: FlagCmd) -> Result<(), Error> {
    let ns = ctx.ns.as_str();
    let kind = Kind::flag(ns);
    match cmd {
        FlagCmd::List {
            tag,
            query,
            limit,
            cursor,
            all,
        } => list_flags(ctx, &kind, tag, query, limit, cursor, all).await,
        FlagCmd::Get { key } => get(ctx, &kind.item(&key)).await,
        FlagCmd::Create {
            key,
            fields,
            file,
            allow_invalid_targeting,
        } => {
            // Without variants, the flag is a boolean kill switch that starts off.
            let mut defaults = Map::new();
            defaults.insert("state".to_owned(), json!("ENABLED"));
            if fields.variants.is_empty() {
                defaults.insert("variants".to_owned(), json!({"on": true, "off": false}));
                defaults.insert("defaultVariant".to_owned(), json!("off"));
            }
            let body = create_body(&kind, key.as_deref(), &file, defaults, |m| {
                fields.apply(m);
            })?;
            create(ctx, &kind, body, Some(allow_invalid_targeting)).await
        }
        FlagCmd::Update {
            key,
            fields,
            file,
            version,
            allow_invalid_targeting,
        } => {
            update(
                ctx,
                &kind,
                &key,
                &file,
                version.if_version,
                allow_invalid_targeting,
                |m| fields.apply(m),
            )
            .await
        }
        FlagCmd::Patch {
            key,
            fields,
            file,
            version,
            allow_invalid_targeting,
        } => {
            let body = match &file.file {
                Some(f) => Value::Object(read_json_object(f)?),
                None => {
                    let mut m = Map::new();
                    if !fields.apply(&mut m) {
                        return Err(Error::Usage(
                            "nothing to patch: give the fields to set, or --file".to_owned(),
                        ));
                    }
                    Value::Object(m)
                }
            };
            let patched = ctx
                .client
                .json(
                    Call::api(Method::PATCH, &kind.item(&key))
                        .query(
                            "allowInvalidTargeting",
                            Some(true).filter(|_| allow_invalid_targeting),
                        )
                        .if_version(version.if_version)
                        .raw(
                            body.to_string().into_bytes(),
                            "application/merge-patch+json",
                        ),
                )
                .await?;
            ctx.out.one(&patched)
        }
        FlagCmd::Delete { key, version } => {
            delete(
                ctx,
                &kind.item(&key),
                version.if_version,
                &format!("flag {key}"),
            )
            .await
        }
        FlagCmd::Enable { key } => switch(ctx, &kind, &key, FlagState::Enabled).await,
        FlagCmd::Disable { key } => switch(ctx, &kind, &key, FlagState::Disabled).await,
        FlagCmd::History { key, page } => {
            let events = ctx
                .client
                .json(
                    Call::api(Method::GET, &kind.sub(&key, "history"))
                        .query("afterSeq", page.after)
                        .query("limit", page.limit),
                )
                .await?;
            ctx.out.list(&events, &[SEQ, AT, ACTOR, ACTION])
        }
    }
}

async fn switch(ctx: &Ctx, kind: &Kind<'_>, key: &str, to: FlagState) -> Result<(), Error> {
    let action = match to {
        FlagState::Enabled => "enable",
        FlagState::Disabled => "disable",
    };
    let flag = ctx
        .client
        .json(Call::api(Method::POST, &kind.sub(key, action)))
        .await?;
    match ctx.out.format {
        Output::Json => ctx.out.json(&flag),
        Output::Table => ctx.out.line(&format!(
            "flag {key} is {} (version {})",
            field(&flag, "state"),
            field(&flag, "version")
        )),
    }
}

async fn list_flags(
    ctx: &Ctx,
    kind: &Kind<'_>,
    tag: Option<String>,
    query: Option<String>,
    limit: Option<u32>,
    mut cursor: Option<String>,
    all: bool,
) -> Result<(), Error> {
    let mut collected: Vec<Value> = Vec::new();
    loop {
        let page = ctx
            .client
            .json(
                Call::api(Method::GET, &kind.collection)
                    .query("tag", tag.as_deref())
                    .query("q", query.as_deref())
                    .query("limit", limit)
                    .query("cursor", cursor.as_deref()),
            )
            .await?;
        let next = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !all {
            ctx.out.list(&page, FLAG_COLUMNS)?;
            if let Some(next) = next.filter(|_| ctx.out.format == Output::Table) {
                eprintln!("more flags: --cursor {next} (or --all)");
            }
            return Ok(());
        }
        collected.extend(items(&page).iter().cloned());
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    ctx.out.list(&json!({"items": collected}), FLAG_COLUMNS)
}

// ---- segments ----------------------------------------------------------------------------

impl SegmentFields {
    fn apply(&self, m: &mut Map<String, Value>) -> bool {
        let mut changed = set(m, "rule", self.rule.clone());
        changed |= set(m, "description", self.description.clone().map(Value::from));
        changed
    }
}

async fn segments(ctx: &Ctx, cmd: SegmentCmd) -> Result<(), Error> {
    let kind = Kind::segment(&ctx.ns);
    match cmd {
        SegmentCmd::List => {
            list(
                ctx,
                &kind.collection,
                &[
                    ("KEY", |r| field(r, "key")),
                    ("VERSION", |r| field(r, "version")),
                    ("RULE", |r| field(r, "rule")),
                ],
            )
            .await
        }
        SegmentCmd::Get { key } => get(ctx, &kind.item(&key)).await,
        SegmentCmd::Create { key, fields, file } => {
            let body = create_body(&kind, key.as_deref(), &file, Map::new(), |m| {
                fields.apply(m);
            })?;
            create(ctx, &kind, body, None).await
        }
        SegmentCmd::Update {
            key,
            fields,
            file,
            version,
        } => {
            update(ctx, &kind, &key, &file, version.if_version, false, |m| {
                fields.apply(m)
            })
            .await
        }
        SegmentCmd::Delete { key, version } => {
            delete(
                ctx,
                &kind.item(&key),
                version.if_version,
                &format!("segment {key}"),
            )
            .await
        }
    }
}

// ---- import / export ---------------------------------------------------------------------

async fn import(ctx: &Ctx, i: Import) -> Result<(), Error> {
    let by_extension = {
        let p = PathBuf::from(&i.file);
        match p.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => FileFormat::Yaml,
            _ => FileFormat::Json,
        }
    };
    let content_type = match i.format.unwrap_or(by_extension) {
        FileFormat::Json => "application/json",
        FileFormat::Yaml => "application/yaml",
    };
    let mode = match i.mode {
        ImportMode::Merge => "merge",
        ImportMode::Replace => "replace",
    };
    let outcome = ctx
        .client
        .json(
            Call::api(Method::POST, &["namespaces", &ctx.ns, "import"])
                .query("dryRun", Some(i.dry_run))
                .query("mode", Some(mode))
                .raw(read_input(&i.file)?, content_type),
        )
        .await?;
    if ctx.out.format == Output::Json {
        return ctx.out.json(&outcome);
    }
    let diff = outcome.get("diff").cloned().unwrap_or(Value::Null);
    let mut lines = vec![if i.dry_run {
        "dry run: nothing was written".to_owned()
    } else {
        format!("imported at revision {}", field(&outcome, "revision"))
    }];
    for (label, name) in [
        ("added", "added"),
        ("changed", "changed"),
        ("removed", "removed"),
        ("unchanged", "unchanged"),
        ("segments added", "segmentsAdded"),
        ("segments changed", "segmentsChanged"),
        ("segments removed", "segmentsRemoved"),
    ] {
        let keys: Vec<String> = diff
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        if !keys.is_empty() {
            lines.push(format!("{label}: {}", keys.join(", ")));
        }
    }
    for w in outcome
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        lines.push(format!(
            "warning: {}: {}",
            field(w, "path"),
            field(w, "message")
        ));
    }
    ctx.out.line(&lines.join("\n"))
}

async fn export(ctx: &Ctx, e: Export) -> Result<(), Error> {
    let format = match e.format {
        FileFormat::Json => "json",
        FileFormat::Yaml => "yaml",
    };
    let reply = ctx
        .client
        .send(
            Call::api(Method::GET, &["namespaces", &ctx.ns, "export"])
                .query("format", Some(format)),
        )
        .await?;
    // The file as the server wrote it, whatever -o says: it is the document, not a report.
    ctx.out
        .line(String::from_utf8_lossy(&reply.bytes).trim_end())
}

// ---- evaluation --------------------------------------------------------------------------

async fn eval(ctx: &Ctx, e: Eval) -> Result<(), Error> {
    let mut context = match e.context {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    context.extend(e.ctx);
    if let Some(k) = e.targeting_key {
        context.insert("targetingKey".to_owned(), json!(k));
    }
    let mut body = json!({"context": context});
    if let Some(flag) = &e.flag {
        body["flagKey"] = json!(flag);
    }
    if e.explain {
        body["explain"] = json!(true);
    }
    let answer = ctx
        .client
        .json(Call::api(Method::POST, &["namespaces", &ctx.ns, "evaluate"]).json(body))
        .await?;
    if ctx.out.format == Output::Json {
        return ctx.out.json(&answer);
    }
    const COLUMNS: &[Column] = &[
        ("FLAG", |r| field(r, "flagKey")),
        ("VALUE", |r| json_field(r, "value")),
        ("VARIANT", |r| field(r, "variant")),
        ("REASON", |r| field(r, "reason")),
        ("ERROR", |r| {
            let code = field(r, "errorCode");
            let msg = field(r, "errorMessage");
            if msg.is_empty() {
                code
            } else {
                format!("{code}: {msg}")
            }
        }),
    ];
    if let Some(all) = answer.get("flags").and_then(Value::as_array) {
        return ctx.out.line(&table(all, COLUMNS));
    }
    if let Some(explanation) = answer.get("explanation") {
        let mut row = explanation
            .get("resolution")
            .cloned()
            .unwrap_or(Value::Null);
        row["flagKey"] = answer.get("flagKey").cloned().unwrap_or(Value::Null);
        let mut text = table(std::slice::from_ref(&row), COLUMNS);
        text.push_str(&format!(
            "\n\ndecision:    {}\nrule:        {}\nrule result: {}\ncontext:     {}\nrevision:    {}",
            field(explanation, "decision"),
            explanation.get("rule").map(Value::to_string).unwrap_or_else(|| "(none)".to_owned()),
            explanation.get("ruleResult").map(Value::to_string).unwrap_or_default(),
            explanation.get("context").map(Value::to_string).unwrap_or_default(),
            field(&answer, "revision"),
        ));
        return ctx.out.line(&text);
    }
    ctx.out.line(&table(std::slice::from_ref(&answer), COLUMNS))
}

// ---- configuration -----------------------------------------------------------------------

/// An entry's row: its value as JSON, so `"5"` and `5` read differently.
const CONFIG_COLUMNS: &[Column] = &[
    ("KEY", |r| field(r, "key")),
    ("VERSION", |r| field(r, "version")),
    ("VALUE", |r| json_field(r, "value")),
    ("UPDATED BY", |r| field(r, "updatedBy")),
];

/// Prints a written entry: one row, or the server's JSON.
fn config_written(ctx: &Ctx, entry: &Value) -> Result<(), Error> {
    match ctx.out.format {
        Output::Json => ctx.out.json(entry),
        Output::Table => ctx
            .out
            .line(&table(std::slice::from_ref(entry), CONFIG_COLUMNS)),
    }
}

async fn configs(ctx: &Ctx, cmd: ConfigCmd) -> Result<(), Error> {
    let kind = Kind::config(&ctx.ns);
    match cmd {
        ConfigCmd::List => list(ctx, &kind.collection, CONFIG_COLUMNS).await,
        ConfigCmd::Get { key, value_only } => {
            let entry = ctx
                .client
                .json(Call::api(Method::GET, &kind.item(&key)))
                .await?;
            if value_only {
                return ctx.out.line(&json_field(&entry, "value"));
            }
            match ctx.out.format {
                Output::Json => ctx.out.json(&entry),
                Output::Table => {
                    // `field: value` lines, with the value as JSON rather than bare text.
                    let mut shown = entry.clone();
                    shown["value"] = Value::String(json_field(&entry, "value"));
                    ctx.out.line(&describe(&shown))
                }
            }
        }
        ConfigCmd::Set(args) => {
            let body = config_body(&args)?;
            let entry = ctx
                .client
                .json(
                    Call::api(Method::PUT, &kind.item(&args.key))
                        .if_version(args.version.if_version)
                        .create_only(args.create_only)
                        .json(body),
                )
                .await?;
            config_written(ctx, &entry)
        }
        ConfigCmd::Delete { key, version } => {
            delete(
                ctx,
                &kind.item(&key),
                version.if_version,
                &format!("config {key}"),
            )
            .await
        }
        ConfigCmd::Versions { key, after, limit } => {
            let versions = ctx
                .client
                .json(
                    Call::api(Method::GET, &kind.sub(&key, "versions"))
                        .query("afterVersion", after)
                        .query("limit", limit),
                )
                .await?;
            ctx.out.list(
                &versions,
                &[
                    ("VERSION", |r| field(r, "version")),
                    ("UPDATED", |r| time_field(r, "updatedAt")),
                    ("UPDATED BY", |r| field(r, "updatedBy")),
                    ("VALUE", |r| json_field(r, "value")),
                ],
            )
        }
        ConfigCmd::Rollback { key, to, version } => {
            let entry = ctx
                .client
                .json(
                    Call::api(Method::POST, &kind.sub(&key, "rollback"))
                        .if_version(version.if_version)
                        .json(json!({"version": to})),
                )
                .await?;
            config_written(ctx, &entry)
        }
    }
}

/// The PUT body of `config set`: the value, and the schema and description only when given
/// (absent keeps the current ones; `--no-schema` sends `null`, which removes the schema).
fn config_body(args: &ConfigSet) -> Result<Value, Error> {
    if args.file.as_deref() == Some("-") && args.schema_file.as_deref() == Some("-") {
        return Err(Error::Usage(
            "--file and --schema-file cannot both read standard input".to_owned(),
        ));
    }
    let value = match (&args.value, &args.file) {
        (Some(v), _) => v.clone(),
        (None, Some(f)) => read_json(f)?,
        (None, None) => {
            return Err(Error::Usage(
                "give the value: --value JSON or --file FILE".to_owned(),
            ));
        }
    };
    let mut body = Map::new();
    body.insert("value".to_owned(), value);
    let schema = match (&args.schema, &args.schema_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => Some(read_json(f)?),
        (None, None) => args.no_schema.then_some(Value::Null),
    };
    set(&mut body, "schema", schema);
    set(
        &mut body,
        "description",
        args.description.clone().map(Value::from),
    );
    Ok(Value::Object(body))
}

// ---- audit -------------------------------------------------------------------------------

const SEQ: Column = ("SEQ", |r| field(r, "seq"));
const AT: Column = ("AT", |r| time_field(r, "at"));
const ACTOR: Column = ("ACTOR", |r| {
    let a = r.get("actor").cloned().unwrap_or(Value::Null);
    format!("{}:{}", field(&a, "kind"), field(&a, "id"))
});
const ACTION: Column = ("ACTION", |r| field(r, "action"));

impl AuditFilter {
    fn query(self, call: Call) -> Call {
        call.query("namespace", self.ns)
            .query("kind", self.kind)
            .query("key", self.key)
            .query("afterSeq", self.after)
    }
}

async fn audit(ctx: &Ctx, cmd: AuditCmd) -> Result<(), Error> {
    match cmd {
        AuditCmd::List { filter, limit } => {
            let page = ctx
                .client
                .json(
                    filter
                        .query(Call::api(Method::GET, &["audit"]))
                        .query("limit", limit),
                )
                .await?;
            ctx.out.list(
                &page,
                &[
                    SEQ,
                    AT,
                    ACTOR,
                    ACTION,
                    ("NAMESPACE", |r| field(r, "namespace")),
                    ("KEY", |r| field(r, "key")),
                ],
            )
        }
        AuditCmd::Export {
            filter,
            output_file,
        } => export_audit(ctx, filter, output_file.as_deref()).await,
        AuditCmd::Verify => {
            let report = ctx
                .client
                .json(Call::api(Method::GET, &["audit", "verify"]))
                .await?;
            ctx.out.one(&report)?;
            if report.get("valid").and_then(Value::as_bool) == Some(true) {
                return Ok(());
            }
            let first = report.get("firstBreak").cloned().unwrap_or(Value::Null);
            Err(Error::ChainBroken {
                seq: first.get("seq").and_then(Value::as_u64).unwrap_or_default(),
                reason: field(&first, "reason"),
            })
        }
    }
}

/// Streams the NDJSON export to standard output or a file a chunk at a time, writing only
/// whole lines: a stream cut short leaves whole events behind and an error naming the
/// `--after` that resumes it. The file is created only once the server has said yes.
async fn export_audit(ctx: &Ctx, filter: AuditFilter, to: Option<&str>) -> Result<(), Error> {
    use std::io::Write;
    let filter_after = filter.after;
    let mut stream = ctx
        .client
        .start(
            filter
                .query(Call::api(Method::GET, &["audit", "export"]))
                .unbounded(),
        )
        .await?;
    let (mut sink, target): (Box<dyn std::io::Write>, String) = match to {
        Some(path) => (
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(Error::io(format!("cannot create {path}")))?,
            )),
            path.to_owned(),
        ),
        None => (Box::new(std::io::stdout()), "standard output".to_owned()),
    };
    let write_error = || Error::io(format!("cannot write to {target}"));
    let mut lines = WholeLines::after(filter_after);
    let cut_short = |lines: &WholeLines, url: &reqwest::Url, why: &str| Error::Protocol {
        url: url.to_string(),
        reason: format!(
            "the export was cut short{} ({why}); run it again with --after {} to resume",
            lines
                .last_seq
                .map(|s| format!(" after seq {s}"))
                .unwrap_or_default(),
            lines.last_seq.unwrap_or_default()
        ),
    };
    loop {
        let chunk = match stream.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                sink.flush().map_err(write_error())?;
                return Err(cut_short(&lines, stream.url(), &e.to_string()));
            }
        };
        lines
            .push(&chunk, |whole| sink.write_all(whole))
            .map_err(write_error())?;
    }
    sink.flush().map_err(write_error())?;
    if !lines.rest_is_blank() {
        return Err(cut_short(
            &lines,
            stream.url(),
            "the last event has no end of line",
        ));
    }
    Ok(())
}

/// Whole lines out of a body that arrives in pieces cut anywhere, and the `seq` of the last
/// whole line (an audit event) passed on.
#[derive(Debug)]
struct WholeLines {
    /// Bytes after the last newline: the start of a line still arriving.
    pending: Vec<u8>,
    last_seq: Option<u64>,
}

impl WholeLines {
    /// Nothing seen yet, resuming after `seq` when given.
    fn after(seq: Option<u64>) -> Self {
        Self {
            pending: Vec::new(),
            last_seq: seq,
        }
    }

    /// Takes a piece and hands `write` the lines it completes, newlines included.
    fn push(
        &mut self,
        piece: &[u8],
        write: impl FnOnce(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.pending.extend_from_slice(piece);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        write(&self.pending[..=end])?;
        let start = self.pending[..end]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if let Some(seq) = serde_json::from_slice::<Value>(&self.pending[start..end])
            .ok()
            .and_then(|e| e.get("seq").and_then(Value::as_u64))
        {
            self.last_seq = Some(seq);
        }
        self.pending.drain(..=end);
        Ok(())
    }

    /// Whether what is left after the last newline is only whitespace (else the body ended
    /// inside a line).
    fn rest_is_blank(&self) -> bool {
        self.pending.iter().all(u8::is_ascii_whitespace)
    }
}

// ---- identity ----------------------------------------------------------------------------

async fn users(ctx: &Ctx, cmd: UserCmd) -> Result<(), Error> {
    match cmd {
        UserCmd::List => {
            list(
                ctx,
                &["users"],
                &[
                    ("NAME", |r| field(r, "name")),
                    ("DISPLAY NAME", |r| field(r, "displayName")),
                    ("DISABLED", |r| field(r, "disabled")),
                    ("VERSION", |r| field(r, "version")),
                    ("CREATED", |r| time_field(r, "createdAt")),
                ],
            )
            .await
        }
        UserCmd::Create {
            name,
            display_name,
            password: PasswordArg { password_stdin },
        } => {
            let mut body =
                json!({"name": name, "password": password(password_stdin, "VEXIL_NEW_PASSWORD")?});
            if let Some(d) = display_name {
                body["displayName"] = json!(d);
            }
            post(ctx, &["users"], body).await
        }
        UserCmd::Delete { name } => {
            delete(ctx, &["users", &name], None, &format!("user {name}")).await
        }
        UserCmd::Passwd {
            name,
            password: PasswordArg { password_stdin },
        } => {
            let body = json!({"password": password(password_stdin, "VEXIL_NEW_PASSWORD")?});
            ctx.client
                .send(Call::api(Method::PATCH, &["users", &name]).json(body))
                .await?;
            ctx.out.done(&format!("password of {name} changed"))
        }
    }
}

async fn roles(ctx: &Ctx, cmd: RoleCmd) -> Result<(), Error> {
    match cmd {
        RoleCmd::List => {
            list(
                ctx,
                &["roles"],
                &[
                    ("NAME", |r| field(r, "name")),
                    ("BUILTIN", |r| field(r, "builtin")),
                    ("PERMISSIONS", |r| {
                        r.get("permissions")
                            .and_then(Value::as_array)
                            .map(|p| p.iter().map(text).collect::<Vec<_>>().join(","))
                            .unwrap_or_default()
                    }),
                    ("DESCRIPTION", |r| field(r, "description")),
                ],
            )
            .await
        }
        RoleCmd::Get { name } => get(ctx, &["roles", &name]).await,
        RoleCmd::Create {
            name,
            permissions,
            description,
        } => {
            let mut body = json!({"name": name, "permissions": permissions});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            post(ctx, &["roles"], body).await
        }
        RoleCmd::Delete { name } => {
            delete(ctx, &["roles", &name], None, &format!("role {name}")).await
        }
    }
}

async fn bindings(ctx: &Ctx, cmd: BindingCmd) -> Result<(), Error> {
    match cmd {
        BindingCmd::List => {
            list(
                ctx,
                &["bindings"],
                &[
                    ("ID", |r| field(r, "id")),
                    ("SUBJECT", |r| field(r, "subject")),
                    ("ROLE", |r| field(r, "role")),
                    ("NAMESPACE", |r| field(r, "namespace")),
                ],
            )
            .await
        }
        BindingCmd::Create {
            subject,
            role,
            scope,
        } => {
            let body = json!({"subject": subject, "role": role, "namespace": scope.unwrap_or_else(|| ctx.ns.clone())});
            post(ctx, &["bindings"], body).await
        }
        BindingCmd::Delete { id } => {
            delete(ctx, &["bindings", &id], None, &format!("binding {id}")).await
        }
    }
}

async fn tokens(ctx: &Ctx, cmd: TokenCmd) -> Result<(), Error> {
    match cmd {
        TokenCmd::List => {
            list(
                ctx,
                &["tokens"],
                &[
                    ("ID", |r| field(r, "id")),
                    ("NAME", |r| field(r, "name")),
                    ("ROLE", |r| field(r, "role")),
                    ("NAMESPACE", |r| field(r, "namespace")),
                    ("EXPIRES", |r| {
                        let t = time_field(r, "expiresAt");
                        if t.is_empty() { "never".to_owned() } else { t }
                    }),
                ],
            )
            .await
        }
        TokenCmd::Create {
            name,
            role,
            scope,
            expires_in,
        } => {
            let mut body = json!({"name": name, "role": role, "namespace": scope.unwrap_or_else(|| ctx.ns.clone())});
            if let Some(ms) = expires_in {
                body["expiresAt"] = json!(now_ms().saturating_add(ms));
            }
            let issued = ctx
                .client
                .json(Call::api(Method::POST, &["tokens"]).json(body))
                .await?;
            match ctx.out.format {
                Output::Json => ctx.out.json(&issued),
                // The secret alone on stdout, so `TOKEN=$(vexil token create …)` works; the
                // rest on stderr.
                Output::Table => {
                    eprintln!(
                        "token {} issued (role {}, namespace {}, expires {}); the secret is shown only now:",
                        field(&issued, "id"),
                        field(&issued, "role"),
                        field(&issued, "namespace"),
                        issued
                            .get("expiresAt")
                            .and_then(Value::as_i64)
                            .map_or_else(|| "never".to_owned(), time)
                    );
                    ctx.out.line(&field(&issued, "token"))
                }
            }
        }
        TokenCmd::Revoke { id } => {
            delete(
                ctx,
                &["tokens", &id],
                None,
                &format!("token {id} (revoked)"),
            )
            .await
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_pass_on_only_complete_events_whatever_the_cuts() {
        let body = b"{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n{\"se";
        for cut in [1, 3, 7, 11, body.len()] {
            let mut lines = WholeLines::after(None);
            let mut out = Vec::new();
            for piece in body.chunks(cut) {
                lines
                    .push(piece, |whole| {
                        out.extend_from_slice(whole);
                        Ok(())
                    })
                    .expect("no write error");
            }
            assert_eq!(out, &body[..30], "cut every {cut}");
            assert_eq!(lines.last_seq, Some(3), "cut every {cut}");
            assert!(!lines.rest_is_blank(), "cut every {cut}");
        }
    }

    #[test]
    fn an_export_that_ends_on_a_newline_is_complete_and_remembers_where_it_resumed() {
        let mut lines = WholeLines::after(Some(41));
        lines.push(b"", |_| Ok(())).expect("no write error");
        assert_eq!(lines.last_seq, Some(41));
        lines
            .push(b"{\"seq\":42}\n", |_| Ok(()))
            .expect("no write error");
        assert_eq!(lines.last_seq, Some(42));
        assert!(lines.rest_is_blank());
    }
}
