//! Closed sets of domain values, shared by SQL binds, the read API, the CLI and metrics, so a kind or status
//! is spelled once. Stored as `text` in PostgreSQL (`sqlx::Type`), snake_case on every surface.

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
            clap::ValueEnum,
        )]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        #[clap(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in PostgreSQL and shown in the API, the CLI and metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; use one of {}",
                        stringify!($name),
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }
    };
}

wire_enum! {
    /// What a queued WeCom API job does.
    JobKind {
        /// `externalcontact/get`: a customer's details and every follow.
        ContactDetail = "contact_detail",
        /// `externalcontact/groupchat/get`: a group chat with its members.
        GroupChat = "group_chat",
        /// `externalcontact/get_corp_tag_list`: every corp tag.
        CorpTags = "corp_tags",
        /// `idconvert/batch/external_userid_to_pending_id`: the pending ids of customers added while their
        /// corp had open ones (see [`crate::store::identity`]).
        ResolvePendingIds = "resolve_pending_ids",
        /// `user/get`: a staff member's directory entry (通讯录).
        StaffDetail = "staff_detail",
        /// Service providers: exchanges a `create_auth` / `reset_permanent_code` AuthCode (read from the
        /// stored event named by the subject) for the corp's permanent code.
        ProviderAuth = "provider_auth",
        /// Service providers: `change_auth`, re-reads the corp's authorisation (`service/get_auth_info`).
        ProviderRefresh = "provider_refresh",
        /// Service providers: after `cancel_auth`, deletes the corp's synced rows (and later its events).
        ProviderPurge = "provider_purge",
        /// Service providers: a full resync of an authorised corp with its own token (the first after
        /// authorisation).
        CorpResync = "corp_resync",
    }
}

wire_enum! {
    /// Where a corp's authorisation of a suite is (service providers).
    CorpState {
        /// Installed: its permanent code is stored and its API work runs.
        Authorised = "authorised",
        /// `cancel_auth` arrived: nothing more is called for it, and its data is deleted.
        Cancelled = "cancelled",
    }
}

wire_enum! {
    /// A staff member's state in the directory (通讯录).
    StaffStatus {
        /// 已激活.
        Active = "active",
        /// 已禁用.
        Disabled = "disabled",
        /// 未激活: invited, not joined yet.
        NotActivated = "not_activated",
        /// Left the corp (`delete_user`, or gone from the directory in a resync).
        Left = "left",
    }
}

impl StaffStatus {
    /// WeCom's numeric `Status` / `status` (1, 2, 4, 5); `None` for values it does not define.
    pub fn from_wecom(code: i64) -> Option<StaffStatus> {
        match code {
            1 => Some(StaffStatus::Active),
            2 => Some(StaffStatus::Disabled),
            4 => Some(StaffStatus::NotActivated),
            5 => Some(StaffStatus::Left),
            _ => None,
        }
    }
}

wire_enum! {
    /// Where a job is in its life.
    JobStatus {
        /// Waiting for its `run_after`.
        Queued = "queued",
        /// Leased by a worker.
        Running = "running",
        /// Finished (or superseded by an equal queued job when retried).
        Done = "done",
        /// Gave up after `max_attempts` or a permanent error; `jobs retry` queues it again.
        Dead = "dead",
    }
}

wire_enum! {
    /// The state of the relation between a staff member and a customer.
    FollowStatus {
        /// Both sides have each other.
        Active = "active",
        /// Half-added: the customer has not confirmed yet.
        Pending = "pending",
        /// The staff member deleted the customer.
        DeletedByStaff = "deleted_by_staff",
        /// The customer deleted the staff member (WeCom still lists the one-way relation).
        DeletedByCustomer = "deleted_by_customer",
        /// A resync no longer found it; which side ended it is unknown.
        Removed = "removed",
    }
}

wire_enum! {
    /// What a change feed entry is about (see [`crate::store::feed`]).
    ChangeKind {
        /// A customer and one staff member's follow of them (`external_contact_follows`).
        Contact = "contact",
        /// A customer group chat (`external_group_chats`, members included).
        Chat = "chat",
        /// A corp customer tag (`external_corp_tags`).
        Tag = "tag",
        /// A customer identity (`customer_identities`): a pending id resolved.
        Identity = "identity",
        /// A staff member of the directory (`staff`).
        Staff = "staff",
        /// A department of the directory (`departments`).
        Department = "department",
    }
}

wire_enum! {
    /// What caused a change feed entry.
    ChangeSource {
        /// A stored callback event (`event_id` names it).
        Event = "event",
        /// A WeCom API observation (enrichment, resync, a read-through lookup).
        Api = "api",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(*k));
        }
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(*s));
        }
        for s in FollowStatus::ALL {
            assert_eq!(s.as_str().parse::<FollowStatus>(), Ok(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::from(s.as_str()))
            );
        }
        assert!("typo".parse::<JobStatus>().unwrap_err().contains("queued"));
    }
}
