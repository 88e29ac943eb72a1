-- A tag's type and rule group are last-writer-wins registers of their own (the newest event that carried
-- each decides it), so the result does not depend on the order events are applied in.
ALTER TABLE external_corp_tags ADD COLUMN type_version TEXT COLLATE "C";
ALTER TABLE external_corp_tags ADD COLUMN strategy_version TEXT COLLATE "C";
UPDATE external_corp_tags SET type_version = last_version WHERE type IS NOT NULL;
UPDATE external_corp_tags SET strategy_version = last_version WHERE strategy_id IS NOT NULL;
