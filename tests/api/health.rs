use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_ok_when_migrated() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "ready");
}

#[tokio::test]
async fn readyz_fails_when_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.pool)
        .await
        .expect("delete");
    let r = app.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 503);
}
