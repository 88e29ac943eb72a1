//! The staff directory (通讯录): `user/get`, `department/list`, `user/list_id`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sync::client::de;

/// A member as `user/get` answers (通讯录). Since 2022 WeCom omits what the secret may not read (a new
/// self-built app gets little more than `userid`, `name` and `position`): every field is optional, and an
/// absent field is recorded as unavailable rather than as empty.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct StaffMember {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub userid: String,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// Department ids; `None` when not sent.
    #[serde(
        default,
        deserialize_with = "de::raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub department: Option<Value>,
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub main_department: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub position: Option<String>,
    /// 1 active, 2 disabled, 4 not activated, 5 left.
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub open_userid: Option<String>,
}

impl StaffMember {
    /// The department ids, when WeCom sent a list (ids that are not integers are skipped).
    pub fn department_ids(&self) -> Option<Vec<i64>> {
        match &self.department {
            Some(Value::Array(items)) => Some(items.iter().filter_map(Value::as_i64).collect()),
            _ => None,
        }
    }
}

/// A department as `department/list` answers.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Department {
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub parentid: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub order: Option<i64>,
}

/// `department/list`'s envelope.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DepartmentList {
    #[serde(default, deserialize_with = "de::objects")]
    pub department: Vec<Department>,
}

/// One entry of `user/list_id`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeptUser {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub userid: String,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub department: Option<i64>,
}

/// A page of `user/list_id`.
#[derive(Debug, Default, Deserialize)]
pub struct UserIdPage {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
    #[serde(default, deserialize_with = "de::objects")]
    pub dept_user: Vec<DeptUser>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sync::client::types::decode;

    #[test]
    fn a_restricted_user_get_answer_leaves_the_unreadable_fields_absent() {
        let m: StaffMember =
            decode(json!({"errcode": 0, "userid": "zhangsan", "name": "张三", "position": ""}));
        assert_eq!(m.name.as_deref(), Some("张三"));
        assert_eq!(m.position.as_deref(), Some(""));
        assert!(m.department_ids().is_none() && m.status.is_none());
        let m: StaffMember =
            decode(json!({"userid": "u", "department": [1, "x", 3], "main_department": 3}));
        assert_eq!(m.department_ids(), Some(vec![1, 3]));
    }
}
