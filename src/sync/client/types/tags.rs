//! Customer tags: `get_corp_tag_list`.

use serde::{Deserialize, Serialize};

use crate::sync::client::de;

/// `externalcontact/get_corp_tag_list`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CorpTagList {
    #[serde(default, deserialize_with = "de::objects")]
    pub tag_group: Vec<CorpTagGroup>,
}

impl CorpTagList {
    /// Every group and tag id the list names.
    pub fn ids(&self) -> Vec<String> {
        self.tag_group
            .iter()
            .flat_map(|g| {
                g.group_id
                    .iter()
                    .chain(g.tag.iter().filter_map(|t| t.id.as_ref()))
            })
            .cloned()
            .collect()
    }
}

/// A tag group and its tags.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CorpTagGroup {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub create_time: Option<i64>,
    /// The group's sort order under the name some answers use (see `group_order`).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub order: Option<i64>,
    /// The group's sort order under the name docs/protocol.md §7.4 gives; preferred over `order` when both come.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub group_order: Option<i64>,
    /// The rule group (规则组) of a group from `get_strategy_tag_list`; `None` for corp tags.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub strategy_id: Option<i64>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub deleted: bool,
    #[serde(default, deserialize_with = "de::objects")]
    pub tag: Vec<CorpTag>,
}

/// A tag.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CorpTag {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub create_time: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub order: Option<i64>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sync::client::types::decode;

    #[test]
    fn corp_tag_list_decodes() {
        let l: CorpTagList = decode(json!({
            "errcode": 0, "errmsg": "ok",
            "tag_group": [{
                "group_id": "TAG_GROUPID1", "group_name": "GOURP_NAME", "create_time": 1557838797,
                "order": 1, "group_order": 2, "deleted": false,
                "tag": [
                    {"id": "TAG_ID1", "name": "NAME1", "create_time": 1557838797, "order": 1, "deleted": false},
                    {"id": "TAG_ID2", "name": "NAME2", "create_time": 1557838797, "order": 2, "deleted": true}
                ]
            }, {"group_name": "no id", "deleted": "yes"}]
        }));
        let g = &l.tag_group[0];
        assert_eq!(g.group_id.as_deref(), Some("TAG_GROUPID1"));
        assert_eq!(
            (g.order, g.group_order, g.deleted),
            (Some(1), Some(2), false)
        );
        assert_eq!(g.tag.len(), 2);
        assert!(g.tag[1].deleted);
        assert_eq!(g.tag[1].id.as_deref(), Some("TAG_ID2"));
        let odd = &l.tag_group[1];
        assert!(odd.group_id.is_none() && !odd.deleted && odd.tag.is_empty());
        let l: CorpTagList = decode(json!({"errcode": 0, "errmsg": "ok"}));
        assert!(l.tag_group.is_empty());
    }
}
