//! The endpoints: one method per `/cgi-bin/…` call, with its request body, on top of the generic call of
//! the [parent module](super) (tokens, limits, retries, the envelope).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::paging::{Endpoint, Pages};
use super::types::{
    self, BatchByUserPage, CorpTagList, ExternalContactDetail, FollowUserList, GroupChat,
    GroupChatAnswer, GroupChatListPage, Jscode2Session, UnassignedPage,
};
use super::{ApiError, Credentials, EmptyRequest, Fetched, NO_BODY, TokenSource, WecomApi};

impl WecomApi {
    /// One page of a paged endpoint (see [`super::paging`]).
    pub(super) async fn page<P: DeserializeOwned>(
        &self,
        creds: &Credentials,
        endpoint: Endpoint<'_>,
        cursor: &str,
    ) -> Result<Fetched<P>, ApiError> {
        match endpoint {
            Endpoint::ExternalContact { external_userid } => {
                let mut query = vec![("external_userid", external_userid)];
                // The first page is asked for without a cursor, as it always was.
                if !cursor.is_empty() {
                    query.push(("cursor", cursor));
                }
                self.call_fetched(creds, "/cgi-bin/externalcontact/get", &query, NO_BODY)
                    .await
            }
            Endpoint::BatchByUser { userids } => {
                let body = BatchByUserRequest {
                    userid_list: userids,
                    cursor,
                    limit: 100,
                };
                self.call_fetched(
                    creds,
                    "/cgi-bin/externalcontact/batch/get_by_user",
                    &[],
                    Some(&body),
                )
                .await
            }
            Endpoint::GroupChatList { owners } => {
                let body = GroupChatListRequest {
                    status_filter: 0,
                    owner_filter: (!owners.is_empty()).then_some(OwnerFilter {
                        userid_list: owners,
                    }),
                    cursor,
                    limit: 1000,
                };
                self.call_fetched(
                    creds,
                    "/cgi-bin/externalcontact/groupchat/list",
                    &[],
                    Some(&body),
                )
                .await
            }
            Endpoint::Unassigned => {
                let body = UnassignedRequest {
                    cursor,
                    page_size: 1000,
                };
                self.call_fetched(
                    creds,
                    "/cgi-bin/externalcontact/get_unassigned_list",
                    &[],
                    Some(&body),
                )
                .await
            }
        }
    }

    /// `externalcontact/get_follow_user_list`: the members with 客户联系 enabled (also a harmless permission check).
    pub async fn follow_user_list(&self, creds: &Credentials) -> Result<Vec<String>, ApiError> {
        let answer: FollowUserList = self
            .call_json(
                creds,
                "/cgi-bin/externalcontact/get_follow_user_list",
                &[],
                NO_BODY,
            )
            .await?;
        Ok(answer.follow_user)
    }

    /// `externalcontact/get`, every page: the contact (from the first page) with the followers of all pages,
    /// as of the first page's request.
    pub async fn external_contact(
        &self,
        creds: &Credentials,
        external_userid: &str,
    ) -> Result<Fetched<ExternalContactDetail>, ApiError> {
        let mut pages: Pages<'_, ExternalContactDetail> = Pages::new(
            self,
            creds,
            Endpoint::ExternalContact { external_userid },
            "",
        );
        let mut merged: Option<ExternalContactDetail> = None;
        let mut at = None;
        while let Some(page) = pages.next().await? {
            at = at.or(pages.fetched_at());
            match &mut merged {
                None => merged = Some(page),
                Some(all) => {
                    all.follow_user.extend(page.follow_user);
                    all.next_cursor = page.next_cursor;
                }
            }
        }
        // The walk always reads a first page, so both are set; the defaults only satisfy the types.
        Ok(Fetched {
            value: merged.unwrap_or_default(),
            at: at.unwrap_or_else(chrono::Utc::now),
        })
    }

    /// `externalcontact/batch/get_by_user` for at most 100 `userids`, page by page from `cursor` (`""`: the
    /// start; a saved `next_cursor`: resume there).
    pub fn batch_get_by_user<'a>(
        &'a self,
        creds: &'a Credentials,
        userids: &'a [String],
        cursor: &str,
    ) -> Pages<'a, BatchByUserPage> {
        Pages::new(self, creds, Endpoint::BatchByUser { userids }, cursor)
    }

    /// `externalcontact/groupchat/list` (every status), page by page: the chats of `owners` (at most
    /// [`MAX_OWNER_FILTER`]); every chat when `owners` is empty, which WeCom refuses with 81017 when the app's
    /// visible range has more than 1000 members (docs/protocol.md §7.3).
    pub fn group_chat_list<'a>(
        &'a self,
        creds: &'a Credentials,
        owners: &'a [String],
    ) -> Pages<'a, GroupChatListPage> {
        Pages::new(self, creds, Endpoint::GroupChatList { owners }, "")
    }

    /// `externalcontact/get_unassigned_list`, page by page: the customers of members who left the corp and
    /// wait for 离职继承 (reassignment), which no other list and no callback names.
    pub fn unassigned_list<'a>(&'a self, creds: &'a Credentials) -> Pages<'a, UnassignedPage> {
        Pages::new(self, creds, Endpoint::Unassigned, "")
    }

    /// `externalcontact/get_corp_tag_list`: every tag group and tag.
    pub async fn corp_tag_list(
        &self,
        creds: &Credentials,
    ) -> Result<Fetched<CorpTagList>, ApiError> {
        self.call_fetched(
            creds,
            "/cgi-bin/externalcontact/get_corp_tag_list",
            &[],
            Some(&EmptyRequest {}),
        )
        .await
    }

    /// `externalcontact/get_strategy_tag_list`: every rule-group (规则组) tag group and tag, which
    /// `get_corp_tag_list` does not list. Same shape, with `strategy_id` on each group.
    pub async fn strategy_tag_list(
        &self,
        creds: &Credentials,
    ) -> Result<Fetched<CorpTagList>, ApiError> {
        self.call_fetched(
            creds,
            "/cgi-bin/externalcontact/get_strategy_tag_list",
            &[],
            Some(&EmptyRequest {}),
        )
        .await
    }

    /// `externalcontact/groupchat/get`: one customer group chat with its members; `None` when the answer has
    /// no `group_chat`.
    pub async fn group_chat(
        &self,
        creds: &Credentials,
        chat_id: &str,
    ) -> Result<Fetched<Option<GroupChat>>, ApiError> {
        let answer: Fetched<GroupChatAnswer> = self
            .call_fetched(
                creds,
                "/cgi-bin/externalcontact/groupchat/get",
                &[],
                Some(&GroupChatRequest {
                    chat_id,
                    need_name: 1,
                }),
            )
            .await?;
        Ok(Fetched {
            value: answer.value.group_chat,
            at: answer.at,
        })
    }

    /// `miniprogram/jscode2session`: exchanges a `wx.qy.login` code for the corp and user. The token must come
    /// from the secret of the app linked to the mini-program.
    pub async fn jscode2session(
        &self,
        creds: &Credentials,
        code: &str,
    ) -> Result<Jscode2Session, ApiError> {
        if let TokenSource::Suite {
            suite_id,
            suite_secret,
        } = &creds.source
        {
            return self
                .suite_jscode2session(suite_id, suite_secret, code)
                .await;
        }
        self.call_json(
            creds,
            "/cgi-bin/miniprogram/jscode2session",
            &[("js_code", code), ("grant_type", "authorization_code")],
            NO_BODY,
        )
        .await
    }

    /// `user/get` (通讯录): one member, with only the fields the secret may read (see
    /// [`types::StaffMember`]). 60111: no such member.
    pub async fn user_get(
        &self,
        creds: &Credentials,
        userid: &str,
    ) -> Result<Fetched<types::StaffMember>, ApiError> {
        self.call_fetched(creds, "/cgi-bin/user/get", &[("userid", userid)], NO_BODY)
            .await
    }

    /// `department/list`: every department the secret may see.
    pub async fn department_list(
        &self,
        creds: &Credentials,
    ) -> Result<Fetched<Vec<types::Department>>, ApiError> {
        let answer: Fetched<types::DepartmentList> = self
            .call_fetched(creds, "/cgi-bin/department/list", &[], NO_BODY)
            .await?;
        Ok(Fetched {
            value: answer.value.department,
            at: answer.at,
        })
    }

    /// One page of `user/list_id` (every member's userid and departments), from `cursor` (empty: the first).
    pub async fn user_list_id(
        &self,
        creds: &Credentials,
        cursor: &str,
    ) -> Result<types::UserIdPage, ApiError> {
        let body = UserListIdRequest {
            cursor,
            limit: 10_000,
        };
        self.call_json(creds, "/cgi-bin/user/list_id", &[], Some(&body))
            .await
    }
}

/// `user/list_id`'s body.
#[derive(Serialize)]
struct UserListIdRequest<'a> {
    cursor: &'a str,
    limit: u32,
}

/// Customer identity (issue 13): unionid conversion and pending-id lookup.
impl WecomApi {
    /// Converts a WeChat `unionid` (with the `openid` it came with) to the corp's `external_userid`, or the
    /// `pending_id` WeCom hands out while the person is not a customer yet. A self-built app calls
    /// `externalcontact/unionid_to_external_userid`, a third-party or 代开发 app
    /// `idconvert/unionid_to_external_userid`. `subject_type`: 0 the mini-program's subject is the corp's
    /// (WeCom's default), 1 a 上下游 / group subject.
    ///
    /// Never retried on 45009: the quota is per hour, so the caller explains it instead of waiting.
    pub async fn unionid_to_external_userid(
        &self,
        creds: &Credentials,
        kind: crate::app::AppKind,
        unionid: &str,
        openid: &str,
        subject_type: Option<u8>,
    ) -> Result<types::UnionidConversion, ApiError> {
        let path = match kind {
            crate::app::AppKind::SelfBuilt => "/cgi-bin/externalcontact/unionid_to_external_userid",
            crate::app::AppKind::Agency
            | crate::app::AppKind::SuiteInstruction
            | crate::app::AppKind::SuiteData => "/cgi-bin/idconvert/unionid_to_external_userid",
        };
        let body = UnionidRequest {
            unionid,
            openid,
            subject_type,
        };
        let mut answer: types::UnionidConversion =
            self.call_json_once(creds, path, Some(&body)).await?;
        answer.external_userid = answer.external_userid.filter(|s| !s.is_empty());
        answer.pending_id = answer.pending_id.filter(|s| !s.is_empty());
        Ok(answer)
    }

    /// `idconvert/batch/external_userid_to_pending_id`: the pending ids of `external_userids`, asked
    /// [`MAX_PENDING_ID_LOOKUP`] at a time. Returns (external_userid, pending_id) pairs; customers without one
    /// are left out.
    pub async fn external_userid_to_pending_id(
        &self,
        creds: &Credentials,
        external_userids: &[String],
    ) -> Result<Vec<(String, String)>, ApiError> {
        let mut pairs = Vec::new();
        for chunk in external_userids.chunks(MAX_PENDING_ID_LOOKUP) {
            let answer: types::PendingIdList = self
                .call_json(
                    creds,
                    "/cgi-bin/idconvert/batch/external_userid_to_pending_id",
                    &[],
                    Some(&PendingIdRequest {
                        external_userid: chunk,
                    }),
                )
                .await?;
            pairs.extend(
                answer
                    .result
                    .into_iter()
                    .filter(|p| !p.external_userid.is_empty() && !p.pending_id.is_empty())
                    .map(|p| (p.external_userid, p.pending_id)),
            );
        }
        Ok(pairs)
    }
}

/// External userids per `idconvert/batch/external_userid_to_pending_id` call (WeCom's maximum).
pub const MAX_PENDING_ID_LOOKUP: usize = 100;

#[derive(Serialize)]
struct UnionidRequest<'a> {
    unionid: &'a str,
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_type: Option<u8>,
}

#[derive(Serialize)]
struct PendingIdRequest<'a> {
    external_userid: &'a [String],
}

/// Fields in the order they were always sent.
#[derive(Serialize)]
struct BatchByUserRequest<'a> {
    userid_list: &'a [String],
    cursor: &'a str,
    limit: u32,
}

/// Cursor paging (WeCom's older `page_id` is left out: the cursor supersedes it).
#[derive(Serialize)]
struct UnassignedRequest<'a> {
    cursor: &'a str,
    page_size: u32,
}

#[derive(Serialize)]
struct GroupChatListRequest<'a> {
    status_filter: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_filter: Option<OwnerFilter<'a>>,
    cursor: &'a str,
    limit: u32,
}

#[derive(Serialize)]
struct OwnerFilter<'a> {
    userid_list: &'a [String],
}

#[derive(Serialize)]
struct GroupChatRequest<'a> {
    chat_id: &'a str,
    need_name: u32,
}
