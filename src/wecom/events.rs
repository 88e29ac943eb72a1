//! Typed events: what a stored message means. Pure.
//!
//! Both WeCom forms map to the same types: the app form (`MsgType=event`, `Event=…`, `CreateTime`, corp in
//! `ToUserName`) and the third-party suite form (`InfoType=…`, `TimeStamp`, corp in `AuthCorpId`). Anything not
//! recognised, or recognised but missing an identifying field, is [`EventKind::Unknown`]: the raw message is
//! always kept in `wecom_events`, so nothing is lost by not understanding it.

use crate::wecom::message::Message;

/// A parsed event with the header fields every kind shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedEvent {
    /// The corp the event is about (the authorising corp for suite messages).
    pub corp_id: Option<String>,
    /// `SuiteId` for suite messages.
    pub suite_id: Option<String>,
    /// `CreateTime` or `TimeStamp`, unix seconds.
    pub time: Option<i64>,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    ExternalContact(ExternalContactEvent),
    ExternalChat(ExternalChatEvent),
    ExternalTag(ExternalTagEvent),
    Contact(ContactEvent),
    Suite(SuiteEvent),
    /// Anything else: a user message, a new event type, or a known type missing its ids.
    Unknown {
        event: Option<String>,
        change_type: Option<String>,
    },
}

/// `change_external_contact`: a follow relation between an employee (`userid`) and a customer changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalContactEvent {
    pub userid: String,
    pub external_userid: String,
    pub change: ContactChange,
}

/// The `ChangeType` of a `change_external_contact` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChange {
    /// `add_external_contact`: the employee added the customer.
    Add {
        state: Option<String>,
        welcome_code: Option<String>,
    },
    /// `edit_external_contact`: remark or corp tags edited.
    Edit,
    /// `add_half_external_contact`: the customer added the employee (免验证); not yet confirmed.
    AddHalf {
        state: Option<String>,
        welcome_code: Option<String>,
    },
    /// `del_external_contact`: the employee deleted the customer.
    DeletedByStaff { source: Option<DeleteSource> },
    /// `del_follow_user`: the customer deleted the employee.
    DeletedByCustomer,
    /// `transfer_fail`: a transfer to a new employee failed; the original follow stays.
    TransferFail { reason: Option<FailReason> },
    /// A ChangeType this version does not know (e.g. `msg_audit_approved`).
    Other(String),
}

/// `Source` of `del_external_contact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteSource {
    /// `DELETE_BY_TRANSFER`: removed automatically by an in-service transfer (在职继承).
    DeleteByTransfer,
    Other(String),
}

impl DeleteSource {
    fn parse(s: &str) -> Self {
        match s {
            "DELETE_BY_TRANSFER" => DeleteSource::DeleteByTransfer,
            other => DeleteSource::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            DeleteSource::DeleteByTransfer => "DELETE_BY_TRANSFER",
            DeleteSource::Other(s) => s,
        }
    }
}

/// `FailReason` of `transfer_fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// `customer_refused`: 客户拒绝.
    CustomerRefused,
    /// `customer_limit_exceed`: 接替成员的客户数达到上限.
    CustomerLimitExceed,
    Other(String),
}

impl FailReason {
    fn parse(s: &str) -> Self {
        match s {
            "customer_refused" => FailReason::CustomerRefused,
            "customer_limit_exceed" => FailReason::CustomerLimitExceed,
            other => FailReason::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            FailReason::CustomerRefused => "customer_refused",
            FailReason::CustomerLimitExceed => "customer_limit_exceed",
            FailReason::Other(s) => s,
        }
    }
}

/// `change_external_chat`: a customer group chat changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalChatEvent {
    pub chat_id: String,
    pub change: ChatChange,
}

/// The `ChangeType` of a `change_external_chat` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatChange {
    Create,
    Update(ChatUpdate),
    Dismiss,
    Other(String),
}

/// The details of a chat `update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUpdate {
    pub detail: UpdateDetail,
    /// Raw `JoinScene` (callback codes: 0 invited, 3 QR code; they differ from groupchat/get's).
    pub join_scene: Option<i64>,
    /// Raw `QuitScene` (0 left, 1 removed).
    pub quit_scene: Option<i64>,
    pub mem_change_cnt: Option<i64>,
    pub mem_change_list: Vec<String>,
    pub last_mem_ver: Option<String>,
    pub cur_mem_ver: Option<String>,
}

/// `UpdateDetail` of a chat update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateDetail {
    AddMember,
    DelMember,
    ChangeOwner,
    ChangeName,
    ChangeNotice,
    Other(String),
}

impl UpdateDetail {
    fn parse(s: &str) -> Self {
        match s {
            "add_member" => UpdateDetail::AddMember,
            "del_member" => UpdateDetail::DelMember,
            "change_owner" => UpdateDetail::ChangeOwner,
            "change_name" => UpdateDetail::ChangeName,
            "change_notice" => UpdateDetail::ChangeNotice,
            other => UpdateDetail::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            UpdateDetail::AddMember => "add_member",
            UpdateDetail::DelMember => "del_member",
            UpdateDetail::ChangeOwner => "change_owner",
            UpdateDetail::ChangeName => "change_name",
            UpdateDetail::ChangeNotice => "change_notice",
            UpdateDetail::Other(s) => s,
        }
    }
}

/// `change_external_tag`: a corp tag or tag group changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTagEvent {
    pub id: String,
    pub tag_type: Option<TagType>,
    pub strategy_id: Option<String>,
    pub change: TagChange,
}

/// `TagType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagType {
    Tag,
    TagGroup,
    Other(String),
}

impl TagType {
    fn parse(s: &str) -> Self {
        match s {
            "tag" => TagType::Tag,
            "tag_group" => TagType::TagGroup,
            other => TagType::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            TagType::Tag => "tag",
            TagType::TagGroup => "tag_group",
            TagType::Other(s) => s,
        }
    }
}

/// The `ChangeType` of a `change_external_tag` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    Create,
    Update,
    Delete,
    /// Reordering; carries no tag type.
    Shuffle,
    Other(String),
}

/// `change_contact` (通讯录): members, departments and tags of the corp itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactEvent {
    CreateUser(UserChange),
    UpdateUser(UserChange),
    DeleteUser { userid: String },
    CreateParty(PartyChange),
    UpdateParty(PartyChange),
    DeleteParty { id: String },
    UpdateTag(ContactTagChange),
    Other(String),
}

/// A member created or updated. Since 2022-08-15 many callbacks carry only UserID and Department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub userid: String,
    /// `NewUserID` on update (a system-generated userid may be changed once).
    pub new_userid: Option<String>,
    pub name: Option<String>,
    pub department: Vec<String>,
    pub open_userid: Option<String>,
    /// `MainDepartment`, when given.
    pub main_department: Option<String>,
    /// `Position`, when given.
    pub position: Option<String>,
    /// `Status` (1 active, 2 disabled, 4 not activated, 5 left), when given.
    pub status: Option<i64>,
}

/// A department created or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyChange {
    pub id: String,
    pub name: Option<String>,
    pub parent_id: Option<String>,
    /// `Order`, when given.
    pub order: Option<i64>,
}

/// `update_tag`: members of a contact tag changed. WeCom says not to rely on the item lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactTagChange {
    pub tag_id: String,
    pub add_user_items: Vec<String>,
    pub del_user_items: Vec<String>,
    pub add_party_items: Vec<String>,
    pub del_party_items: Vec<String>,
}

/// Third-party suite and 代开发 template events (InfoType form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuiteEvent {
    SuiteTicket {
        ticket: String,
    },
    CreateAuth {
        auth_code: String,
        state: Option<String>,
    },
    ChangeAuth {
        auth_corp_id: String,
        state: Option<String>,
    },
    CancelAuth {
        auth_corp_id: String,
    },
    /// Sources disagree on the payload (AuthCode or AuthCorpId): both are kept.
    ResetPermanentCode {
        auth_code: Option<String>,
        auth_corp_id: Option<String>,
    },
}

fn opt(m: &Message, name: &str) -> Option<String> {
    m.get(name).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn int(m: &Message, name: &str) -> Option<i64> {
    m.get(name).and_then(|v| v.trim().parse().ok())
}

fn csv(m: &Message, name: &str) -> Vec<String> {
    m.get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Interprets a parsed message. Never fails: what it cannot interpret is [`EventKind::Unknown`].
pub fn interpret(m: &Message) -> TypedEvent {
    let event = m.event().map(str::to_owned);
    let change_type = m.change_type().map(str::to_owned);
    let unknown = || EventKind::Unknown {
        event: event.clone(),
        change_type: change_type.clone(),
    };
    // User messages (text, image, ...) carry MsgType other than event and are not events.
    let is_event =
        m.info_type().is_some() || m.msg_type() == Some("event") || m.msg_type().is_none();
    let kind = if !is_event {
        unknown()
    } else {
        match (event.as_deref(), change_type.as_deref()) {
            (Some("change_external_contact"), Some(ct)) => {
                external_contact(m, ct).unwrap_or_else(unknown)
            }
            (Some("change_external_chat"), Some(ct)) => {
                external_chat(m, ct).unwrap_or_else(unknown)
            }
            (Some("change_external_tag"), Some(ct)) => external_tag(m, ct).unwrap_or_else(unknown),
            (Some("change_contact"), Some(ct)) => contact(m, ct).unwrap_or_else(unknown),
            (Some(info), _) if m.info_type().is_some() => suite(m, info).unwrap_or_else(unknown),
            _ => unknown(),
        }
    };
    TypedEvent {
        corp_id: m.corp_id().map(str::to_owned),
        suite_id: m.suite_id().map(str::to_owned),
        time: m.event_time(),
        kind,
    }
}

fn external_contact(m: &Message, ct: &str) -> Option<EventKind> {
    let userid = opt(m, "UserID")?;
    let external_userid = opt(m, "ExternalUserID")?;
    let change = match ct {
        "add_external_contact" => ContactChange::Add {
            state: opt(m, "State"),
            welcome_code: opt(m, "WelcomeCode"),
        },
        "edit_external_contact" => ContactChange::Edit,
        "add_half_external_contact" => ContactChange::AddHalf {
            state: opt(m, "State"),
            welcome_code: opt(m, "WelcomeCode"),
        },
        "del_external_contact" => ContactChange::DeletedByStaff {
            source: opt(m, "Source").map(|s| DeleteSource::parse(&s)),
        },
        "del_follow_user" => ContactChange::DeletedByCustomer,
        "transfer_fail" => ContactChange::TransferFail {
            reason: opt(m, "FailReason").map(|s| FailReason::parse(&s)),
        },
        other => ContactChange::Other(other.to_owned()),
    };
    Some(EventKind::ExternalContact(ExternalContactEvent {
        userid,
        external_userid,
        change,
    }))
}

fn external_chat(m: &Message, ct: &str) -> Option<EventKind> {
    let chat_id = opt(m, "ChatId")?;
    let change = match ct {
        "create" => ChatChange::Create,
        "dismiss" => ChatChange::Dismiss,
        "update" => ChatChange::Update(ChatUpdate {
            detail: UpdateDetail::parse(m.get("UpdateDetail").unwrap_or("")),
            join_scene: int(m, "JoinScene"),
            quit_scene: int(m, "QuitScene"),
            mem_change_cnt: int(m, "MemChangeCnt"),
            mem_change_list: m.list("MemChangeList", "Item"),
            last_mem_ver: opt(m, "LastMemVer"),
            cur_mem_ver: opt(m, "CurMemVer"),
        }),
        other => ChatChange::Other(other.to_owned()),
    };
    Some(EventKind::ExternalChat(ExternalChatEvent {
        chat_id,
        change,
    }))
}

fn external_tag(m: &Message, ct: &str) -> Option<EventKind> {
    let id = opt(m, "Id")?;
    let change = match ct {
        "create" => TagChange::Create,
        "update" => TagChange::Update,
        "delete" => TagChange::Delete,
        "shuffle" => TagChange::Shuffle,
        other => TagChange::Other(other.to_owned()),
    };
    Some(EventKind::ExternalTag(ExternalTagEvent {
        id,
        tag_type: opt(m, "TagType").map(|t| TagType::parse(&t)),
        strategy_id: opt(m, "StrategyId"),
        change,
    }))
}

fn contact(m: &Message, ct: &str) -> Option<EventKind> {
    let user = |m: &Message| -> Option<UserChange> {
        Some(UserChange {
            userid: opt(m, "UserID")?,
            new_userid: opt(m, "NewUserID"),
            name: opt(m, "Name"),
            department: csv(m, "Department"),
            open_userid: opt(m, "OpenUserID"),
            main_department: opt(m, "MainDepartment"),
            position: opt(m, "Position"),
            status: int(m, "Status"),
        })
    };
    let party = |m: &Message| -> Option<PartyChange> {
        Some(PartyChange {
            id: opt(m, "Id")?,
            name: opt(m, "Name"),
            parent_id: opt(m, "ParentId"),
            order: int(m, "Order"),
        })
    };
    let e = match ct {
        "create_user" => ContactEvent::CreateUser(user(m)?),
        "update_user" => ContactEvent::UpdateUser(user(m)?),
        "delete_user" => ContactEvent::DeleteUser {
            userid: opt(m, "UserID")?,
        },
        "create_party" => ContactEvent::CreateParty(party(m)?),
        "update_party" => ContactEvent::UpdateParty(party(m)?),
        "delete_party" => ContactEvent::DeleteParty { id: opt(m, "Id")? },
        "update_tag" => ContactEvent::UpdateTag(ContactTagChange {
            tag_id: opt(m, "TagId")?,
            add_user_items: csv(m, "AddUserItems"),
            del_user_items: csv(m, "DelUserItems"),
            add_party_items: csv(m, "AddPartyItems"),
            del_party_items: csv(m, "DelPartyItems"),
        }),
        other => ContactEvent::Other(other.to_owned()),
    };
    Some(EventKind::Contact(e))
}

fn suite(m: &Message, info_type: &str) -> Option<EventKind> {
    let e = match info_type {
        "suite_ticket" => SuiteEvent::SuiteTicket {
            ticket: opt(m, "SuiteTicket")?,
        },
        "create_auth" => SuiteEvent::CreateAuth {
            auth_code: opt(m, "AuthCode")?,
            state: opt(m, "State"),
        },
        "change_auth" => SuiteEvent::ChangeAuth {
            auth_corp_id: opt(m, "AuthCorpId")?,
            state: opt(m, "State"),
        },
        "cancel_auth" => SuiteEvent::CancelAuth {
            auth_corp_id: opt(m, "AuthCorpId")?,
        },
        "reset_permanent_code" => SuiteEvent::ResetPermanentCode {
            auth_code: opt(m, "AuthCode"),
            auth_corp_id: opt(m, "AuthCorpId"),
        },
        _ => return None,
    };
    Some(EventKind::Suite(e))
}
