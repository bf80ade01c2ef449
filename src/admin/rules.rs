//! `GET/POST /api/v1/rules`, `GET/PUT/DELETE /api/v1/rules/{id}`,
//! `GET /api/v1/rules/{id}/revisions` and `POST /api/v1/rules/{id}/revisions/{rev}/restore`.
//!
//! The body is the rule in its TOML shape, as JSON. Every write records a revision and
//! goes live at once: the snapshot is rebuilt here and, on PostgreSQL, every other
//! instance is told to rebuild its own. Rules that come from `rules.dir` are read-only
//! here: the answer names the file to edit.

use std::time::Duration;

use actix_web::{HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{Caller, Role};
use super::{PREFIX, parse_body, time};
use crate::config::Settings;
use crate::error::{AppError, ErrorBody, FieldError};
use crate::rules::{Rule, RuleEngine, sync};
use crate::store::admin::{RevisionRow, RuleWrite};
use crate::store::rules::RuleRow;
use crate::store::{Store, now_ms};

const HOUR: Duration = Duration::from_secs(3600);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/rules", web::get().to(list_rules))
        .route("/rules", web::post().to(create_rule))
        .route("/rules/{id}", web::get().to(get_rule))
        .route("/rules/{id}", web::put().to(update_rule))
        .route("/rules/{id}", web::delete().to(delete_rule))
        .route("/rules/{id}/revisions", web::get().to(list_revisions))
        .route(
            "/rules/{id}/revisions/{revision}/restore",
            web::post().to(restore_revision),
        );
}

/// Counts over the last hour, day and week.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Window {
    pub hour: i64,
    pub day: i64,
    pub week: i64,
}

impl From<[i64; 3]> for Window {
    fn from([hour, day, week]: [i64; 3]) -> Self {
        Window { hour, day, week }
    }
}

/// What a rule did lately.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleCounters {
    /// Events it fired on.
    pub fired: Window,
    /// Events it was evaluated on without firing.
    pub not_fired: Window,
    /// Reply steps delivered.
    pub sent: Window,
    /// Reply steps that ended failed, dead or expired.
    pub failed: Window,
}

/// A stored rule and where it came from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    pub rule: Rule,
    /// `api` (editable here) or `file` (edit the file instead).
    pub source: String,
    /// For file rules: the file under `rules.dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only in the answer for one rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<RuleCounters>,
    /// Problems that do not refuse the rule (a regex literal that can never match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
}

/// One change of a rule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    pub revision: i64,
    /// The token name, or `rules/<file>` for a change synced from a file.
    pub actor: String,
    pub at: DateTime<Utc>,
    /// `create`, `update`, `delete` or `restore`.
    pub action: String,
    /// The rule before the change; absent when it did not exist.
    pub before: Option<Value>,
    /// The rule after the change; absent when it was deleted.
    pub after: Option<Value>,
}

impl From<RevisionRow> for RevisionView {
    fn from(row: RevisionRow) -> Self {
        let json = |text: Option<String>| {
            text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
        };
        RevisionView {
            revision: row.revision,
            actor: row.actor,
            at: time(row.at),
            action: row.action,
            before: json(row.before),
            after: json(row.after),
        }
    }
}

fn view(row: &RuleRow, settings: &Settings) -> Result<RuleView, AppError> {
    let rule = row
        .rule()
        .map_err(|e| anyhow::anyhow!("stored rule {} does not parse: {e}", row.id))?;
    Ok(RuleView {
        rule,
        source: row.source.clone(),
        file: row
            .source_path
            .as_ref()
            .map(|path| settings.rules.dir.join(path).display().to_string()),
        revision: row.revision,
        created_at: time(row.created_at),
        updated_at: time(row.updated_at),
        counters: None,
        warnings: Vec::new(),
    })
}

/// 409 for a rule that comes from a file: the answer names the file to edit.
fn refuse_file_rule(row: &RuleRow, settings: &Settings) -> Result<(), AppError> {
    if !row.is_from_file() {
        return Ok(());
    }
    let file = settings
        .rules
        .dir
        .join(row.source_path.as_deref().unwrap_or_default());
    Err(AppError::Conflict(format!(
        "rule \"{}\" comes from {}; edit that file instead",
        row.id,
        file.display()
    )))
}

async fn find(store: &Store, id: &str) -> Result<RuleRow, AppError> {
    store
        .find_rule(id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("rule \"{id}\"")))
}

/// The rule in `body`, valid with the assets known now; its warnings come back.
async fn checked_rule(store: &Store, body: Value) -> Result<(Rule, Vec<FieldError>), AppError> {
    let rule: Rule = parse_body(body)?;
    let validation = sync::validate_rule(store, &rule).await?;
    if !validation.errors.is_empty() {
        return Err(AppError::Validation(validation.errors));
    }
    Ok((rule, validation.warnings))
}

/// Makes a committed write live here and on every other instance. The write stands even
/// if this fails; the log says so and the next reload picks it up.
async fn go_live(store: &Store, engine: &RuleEngine) {
    if let Err(err) = sync::reload(store, engine).await {
        tracing::error!(error.cause_chain = ?anyhow::Error::from(err), "a rule change was saved but the rules could not be reloaded");
    }
}

fn definition(rule: &Rule) -> String {
    serde_json::to_string(rule).expect("a rule always serialises")
}

#[utoipa::path(
    get, path = "/api/v1/rules", tag = "rules",
    responses(
        (status = 200, description = "Every rule, API and file rules alike, by id", body = Vec<RuleView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_rules(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let views = store
        .list_rules()
        .await?
        .iter()
        .map(|row| view(row, &settings))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(
    get, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "The rule, with its counters", body = RuleView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_rule(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let row = find(&store, &id).await?;
    let now = now_ms();
    let ago = |d: Duration| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let counts = store
        .rule_counts(&row.id, [ago(HOUR), ago(24 * HOUR), ago(7 * 24 * HOUR)])
        .await?;
    let mut view = view(&row, &settings)?;
    view.counters = Some(RuleCounters {
        fired: counts.fired.into(),
        not_fired: counts.not_fired.into(),
        sent: counts.sent.into(),
        failed: counts.failed.into(),
    });
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    post, path = "/api/v1/rules", tag = "rules",
    request_body = Rule,
    responses(
        (status = 201, description = "Created and live", body = RuleView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not edit rules", body = ErrorBody),
        (status = 409, description = "The id is taken (by a file rule: the answer names the file)", body = ErrorBody),
        (status = 415, description = "The body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid rule; every error names its field", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_rule(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    engine: web::Data<RuleEngine>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let (rule, warnings) = checked_rule(&store, body.into_inner()).await?;
    if let Some(existing) = store.find_rule(&rule.id).await? {
        refuse_file_rule(&existing, &settings)?;
        return Err(taken(&rule.id));
    }
    let write = RuleWrite {
        id: &rule.id,
        definition: &definition(&rule),
        actor: &caller.name,
        action: "create",
        now: now_ms(),
    };
    let row = match store.create_api_rule(&write).await {
        Ok(row) => row,
        Err(err) if err.is_unique_violation() => return Err(taken(&rule.id)),
        Err(err) => return Err(err.into()),
    };
    go_live(&store, &engine).await;
    tracing::info!(rule = %rule.id, by = %caller.name, "rule created");
    let mut view = view(&row, &settings)?;
    view.warnings = warnings;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("{PREFIX}/rules/{}", rule.id)))
        .json(view))
}

fn taken(id: &str) -> AppError {
    AppError::Conflict(format!(
        "a rule with id \"{id}\" already exists; change it with PUT {PREFIX}/rules/{id}"
    ))
}

fn changed_meanwhile(id: &str) -> AppError {
    AppError::Conflict(format!(
        "rule \"{id}\" was changed meanwhile; read it again and retry"
    ))
}

#[utoipa::path(
    put, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "The rule's id")),
    request_body = Rule,
    responses(
        (status = 200, description = "Replaced and live", body = RuleView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not edit rules", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 409, description = "A rule from a file (the answer names it), or changed meanwhile", body = ErrorBody),
        (status = 415, description = "The body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid rule; every error names its field", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_rule(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    engine: web::Data<RuleEngine>,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let current = find(&store, &id).await?;
    refuse_file_rule(&current, &settings)?;
    let (rule, warnings) = checked_rule(&store, body.into_inner()).await?;
    if rule.id != *id {
        return Err(AppError::Validation(vec![FieldError::new(
            "id",
            format!("must be \"{id}\", the id in the path; a rule's id cannot change"),
        )]));
    }
    let row = if current.rule().is_ok_and(|stored| stored == rule) {
        current
    } else {
        let write = RuleWrite {
            id: &rule.id,
            definition: &definition(&rule),
            actor: &caller.name,
            action: "update",
            now: now_ms(),
        };
        let row = store
            .update_api_rule(&write, &current)
            .await?
            .ok_or_else(|| changed_meanwhile(&id))?;
        go_live(&store, &engine).await;
        tracing::info!(rule = %rule.id, by = %caller.name, "rule updated");
        row
    };
    let mut view = view(&row, &settings)?;
    view.warnings = warnings;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    delete, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 204, description = "Deleted; its revisions are kept"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not edit rules", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 409, description = "A rule from a file (the answer names it), or changed meanwhile", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_rule(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    engine: web::Data<RuleEngine>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let current = find(&store, &id).await?;
    refuse_file_rule(&current, &settings)?;
    if !store
        .delete_api_rule(&current, &caller.name, now_ms())
        .await?
    {
        return Err(changed_meanwhile(&id));
    }
    go_live(&store, &engine).await;
    tracing::info!(rule = %id, by = %caller.name, "rule deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/api/v1/rules/{id}/revisions", tag = "rules",
    params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "Every revision, newest first, deleted incarnations included", body = Vec<RevisionView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "The rule never existed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_revisions(
    caller: Caller,
    store: web::Data<Store>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let revisions = store.rule_revisions(&id).await?;
    if revisions.is_empty() {
        return Err(AppError::not_found(format!("rule \"{id}\"")));
    }
    let views: Vec<RevisionView> = revisions.into_iter().map(RevisionView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(
    post, path = "/api/v1/rules/{id}/revisions/{revision}/restore", tag = "rules",
    params(
        ("id" = String, Path, description = "The rule's id"),
        ("revision" = i64, Path, description = "The revision to go back to; restoring a deletion brings back the rule as it was deleted"),
    ),
    responses(
        (status = 200, description = "Restored as a new revision, and live", body = RuleView),
        (status = 400, description = "The revision is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not edit rules", body = ErrorBody),
        (status = 404, description = "No such revision", body = ErrorBody),
        (status = 409, description = "The rule now comes from a file, or changed meanwhile", body = ErrorBody),
        (status = 422, description = "The old rule is no longer valid (a file it sends is gone)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn restore_revision(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    engine: web::Data<RuleEngine>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let (id, revision) = path.into_inner();
    let old = store
        .rule_revision(&id, revision)
        .await?
        .ok_or_else(|| AppError::not_found(format!("revision {revision} of rule \"{id}\"")))?;
    let definition = old
        .after
        .or(old.before)
        .ok_or_else(|| anyhow::anyhow!("revision {revision} of {id} holds no rule"))?;
    let body: Value = serde_json::from_str(&definition)
        .map_err(|e| anyhow::anyhow!("revision {revision} of {id} does not parse: {e}"))?;
    let (rule, warnings) = checked_rule(&store, body).await?;
    let write = RuleWrite {
        id: &id,
        definition: &self::definition(&rule),
        actor: &caller.name,
        action: "restore",
        now: now_ms(),
    };
    let row = match store.find_rule(&id).await? {
        Some(current) => {
            refuse_file_rule(&current, &settings)?;
            store
                .update_api_rule(&write, &current)
                .await?
                .ok_or_else(|| changed_meanwhile(&id))?
        }
        None => match store.create_api_rule(&write).await {
            Ok(row) => row,
            Err(err) if err.is_unique_violation() => return Err(changed_meanwhile(&id)),
            Err(err) => return Err(err.into()),
        },
    };
    go_live(&store, &engine).await;
    tracing::info!(rule = %id, revision, by = %caller.name, "rule restored");
    let mut view = view(&row, &settings)?;
    view.warnings = warnings;
    Ok(HttpResponse::Ok().json(view))
}
