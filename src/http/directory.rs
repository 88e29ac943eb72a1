//! The staff directory read API: a staff member, a department's members, and the staff part of other
//! answers (a staff member's customers, the mini-program session). Handlers only translate.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::http::AppState;
use crate::http::api::{Page, decode_cursor, encode_cursor, limit};
use crate::http::auth::BearerAuth;
use crate::http::error::ApiError;
use crate::store::directory;

/// A staff member with their departments (id, name) as the API answers it, or `None` when unknown.
pub(crate) async fn staff_json(
    pool: &PgPool,
    corp: &str,
    userid: &str,
) -> Result<Option<Value>, sqlx::Error> {
    let Some(staff) = directory::staff(pool, corp, userid).await? else {
        return Ok(None);
    };
    let ids = staff.department_ids.clone().unwrap_or_default();
    let departments = directory::departments(pool, corp, &ids).await?;
    // In WeCom's order (the member's list), with the name where the directory knows it.
    let departments: Vec<Value> = ids
        .iter()
        .map(|id| {
            let d = departments.iter().find(|d| d.id == *id);
            json!({"id": id, "name": d.and_then(|d| d.name.clone())})
        })
        .collect();
    let mut v = serde_json::to_value(&staff).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("departments".into(), Value::Array(departments));
    }
    Ok(Some(v))
}

/// `GET /api/v1/corps/{corp}/staff/{userid}`: a staff member from the directory, with their departments.
pub async fn staff(
    _: BearerAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (corp, userid) = path.into_inner();
    let staff = staff_json(&state.pool, &corp, &userid)
        .await?
        .ok_or(ApiError::StaffNotFound)?;
    Ok(HttpResponse::Ok().json(staff))
}

/// `GET /api/v1/corps/{corp}/departments/{id}/staff`: the department and its members who have not left,
/// by userid, paged.
pub async fn department_staff(
    _: BearerAuth,
    path: web::Path<(String, String)>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (corp, id) = path.into_inner();
    let id: i64 = id
        .trim()
        .parse()
        .map_err(|_| ApiError::DepartmentNotFound)?;
    let limit = limit(&page)?;
    let after = decode_cursor(page.cursor.as_deref())?;
    let department = directory::departments(&state.pool, &corp, &[id])
        .await?
        .into_iter()
        .next();
    let rows = directory::department_staff(&state.pool, &corp, id, after.as_deref(), limit).await?;
    // A department only members name (the events since 2022 carry ids, not departments) is still known.
    if department.is_none() && rows.is_empty() && after.is_none() {
        return Err(ApiError::DepartmentNotFound);
    }
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(&r.userid)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "department": department.map(|d| serde_json::to_value(d).unwrap_or_default())
            .unwrap_or_else(|| json!({"id": id, "name": null})),
        "data": rows,
        "next_cursor": next,
    })))
}
