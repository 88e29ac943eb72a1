//! WeCom's cursor paging, written once: ask with `cursor` (empty for the first page), follow `next_cursor`
//! until it comes back empty.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use serde::de::DeserializeOwned;

use super::types::Paged;
use super::{ApiError, Credentials, Fetched, WecomApi};

/// Where a paged walk is: the cursor to ask for next, or done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(Option<String>);

impl Cursor {
    /// A walk starting at `cursor` (`""`: the first page; a saved `next_cursor`: resume there).
    pub fn at(cursor: &str) -> Cursor {
        Cursor(Some(cursor.to_owned()))
    }

    /// The cursor the next request carries; `None` once the last page was read.
    pub fn pending(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Fetches the next page with `fetch(cursor)` and moves on; `Ok(None)` when there are no more pages (and
    /// then `fetch` is not called). After an error the cursor stays where it was.
    pub async fn next<P, F, Fut>(&mut self, fetch: F) -> Result<Option<P>, ApiError>
    where
        P: Paged,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<P, ApiError>>,
    {
        let Some(cursor) = self.0.clone() else {
            return Ok(None);
        };
        let page = fetch(cursor).await?;
        let next = page.next_cursor();
        self.0 = (!next.is_empty()).then(|| next.to_owned());
        Ok(Some(page))
    }
}

/// Which paged endpoint, with its fixed arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    ExternalContact { external_userid: &'a str },
    BatchByUser { userids: &'a [String] },
    GroupChatList { owners: &'a [String] },
    Unassigned,
}

/// The pages of one paged endpoint, fetched one at a time: `while let Some(page) = pages.next().await? {…}`.
pub struct Pages<'a, P> {
    api: &'a WecomApi,
    creds: &'a Credentials,
    endpoint: Endpoint<'a>,
    cursor: Cursor,
    pause: Duration,
    fetched_at: Option<DateTime<Utc>>,
    page: std::marker::PhantomData<fn() -> P>,
}

impl<'a, P> Pages<'a, P>
where
    P: Paged + DeserializeOwned,
{
    pub(crate) fn new(
        api: &'a WecomApi,
        creds: &'a Credentials,
        endpoint: Endpoint<'a>,
        cursor: &str,
    ) -> Pages<'a, P> {
        Pages {
            api,
            creds,
            endpoint,
            cursor: Cursor::at(cursor),
            pause: Duration::ZERO,
            fetched_at: None,
            page: std::marker::PhantomData,
        }
    }

    /// Waits `pause` before every request (a rate limit).
    pub fn with_pause(mut self, pause: Duration) -> Pages<'a, P> {
        self.pause = pause;
        self
    }

    /// The cursor of the next page (to save for resuming); `None` after the last page.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.pending()
    }

    /// When the request of the page [`Pages::next`] returned last was sent: what the page says is as of
    /// then (see [`super::Fetched`]). `None` before the first page.
    pub fn fetched_at(&self) -> Option<DateTime<Utc>> {
        self.fetched_at
    }

    /// The next page, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<P>, ApiError> {
        let (api, creds, endpoint, pause) = (self.api, self.creds, self.endpoint, self.pause);
        let page = self
            .cursor
            .next(|cursor| async move {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                api.page::<P>(creds, endpoint, &cursor).await
            })
            .await?;
        Ok(page.map(|page| {
            self.fetched_at = Some(page.at);
            page.value
        }))
    }
}

impl<P: Paged> Paged for Fetched<P> {
    fn next_cursor(&self) -> &str {
        self.value.next_cursor()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Page {
        items: Vec<u32>,
        next_cursor: String,
    }

    impl Paged for Page {
        fn next_cursor(&self) -> &str {
            &self.next_cursor
        }
    }

    /// A fake endpoint: cursor → page; records the cursors asked for.
    fn pages() -> HashMap<&'static str, Page> {
        HashMap::from([
            (
                "",
                Page {
                    items: vec![1, 2],
                    next_cursor: "c2".into(),
                },
            ),
            (
                "c2",
                Page {
                    items: vec![3],
                    next_cursor: "c3".into(),
                },
            ),
            (
                "c3",
                Page {
                    items: vec![4],
                    next_cursor: String::new(),
                },
            ),
        ])
    }

    async fn walk(start: &str) -> (Vec<u32>, Vec<String>) {
        let fake = pages();
        let mut asked = Vec::new();
        let mut items = Vec::new();
        let mut cursor = Cursor::at(start);
        while let Some(page) = cursor
            .next(|c| {
                asked.push(c.clone());
                let page = fake.get(c.as_str()).cloned();
                async move { page.ok_or_else(|| ApiError::BadResponse("unknown cursor".into())) }
            })
            .await
            .expect("pages")
        {
            items.extend(page.items);
        }
        (items, asked)
    }

    #[tokio::test]
    async fn every_page_is_read_following_next_cursor() {
        let (items, asked) = walk("").await;
        assert_eq!(items, vec![1, 2, 3, 4]);
        assert_eq!(asked, vec!["", "c2", "c3"]);
    }

    #[tokio::test]
    async fn a_saved_cursor_resumes_there() {
        let (items, asked) = walk("c2").await;
        assert_eq!(items, vec![3, 4]);
        assert_eq!(asked, vec!["c2", "c3"]);
    }

    #[tokio::test]
    async fn an_empty_next_cursor_ends_the_walk_without_another_request() {
        let mut cursor = Cursor::at("c3");
        let mut calls = 0;
        let mut fetch = |_: String| {
            calls += 1;
            async {
                Ok(Page {
                    items: vec![],
                    next_cursor: String::new(),
                })
            }
        };
        assert!(cursor.next(&mut fetch).await.expect("page").is_some());
        assert_eq!(cursor.pending(), None);
        assert!(cursor.next(&mut fetch).await.expect("done").is_none());
        assert!(cursor.next(&mut fetch).await.expect("done").is_none());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn an_error_keeps_the_cursor_for_a_retry() {
        let mut cursor = Cursor::at("c2");
        let r: Result<Option<Page>, ApiError> = cursor
            .next(|_| async { Err(ApiError::HttpStatus(502)) })
            .await;
        assert!(matches!(r, Err(ApiError::HttpStatus(502))));
        assert_eq!(cursor.pending(), Some("c2"));
    }
}
