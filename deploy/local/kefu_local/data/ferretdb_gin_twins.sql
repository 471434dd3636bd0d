-- Make FerretDB 1.24's PostgreSQL backend use its indexes. Run by the local runner at every
-- start of the cluster; idempotent.
--
-- FerretDB pushes an equality filter down as `_jsonb->'field' @> value`, but the indexes it
-- creates (for `_id` and for every createIndexes) are btree indexes on `(_jsonb->'field')`,
-- which serve `=` and never `@>`: every lookup by `_id` scanned the whole table (11 ms at 10k
-- documents, growing with the collection). A GIN index on the same expression serves `@>`
-- (1 ms at 10k, flat). So whenever FerretDB creates a single-field btree index on
-- `_jsonb->...`, this trigger gives it a GIN twin; the DO block below adds the twins that
-- tables created before the trigger lack. Together with plan_cache_mode=force_custom_plan
-- (FerretDB binds the field name as a parameter; only a custom plan sees it as a constant
-- matching the index expression).

CREATE OR REPLACE FUNCTION kefu_gin_twin(index_oid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  index_row record;
  key_expression text;
  twin_name text;
BEGIN
  SELECT i.indrelid::regclass AS table_name, c.relname AS index_name, n.nspname AS schema_name,
         am.amname AS method, i.indnatts AS columns
    INTO index_row
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_am am ON am.oid = c.relam
   WHERE i.indexrelid = index_oid;
  IF NOT FOUND OR index_row.method <> 'btree' OR index_row.columns <> 1 THEN
    RETURN;
  END IF;
  key_expression := pg_get_indexdef(index_oid, 1, false);
  IF key_expression NOT LIKE '((_jsonb -> %' THEN
    RETURN;
  END IF;
  twin_name := left(index_row.index_name, 55) || '_gin';
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin (%s)',
                 twin_name, index_row.table_name, key_expression);
END $$;

CREATE OR REPLACE FUNCTION kefu_gin_twins_on_create_index() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  command record;
BEGIN
  FOR command IN SELECT objid FROM pg_event_trigger_ddl_commands()
                  WHERE command_tag = 'CREATE INDEX' AND object_type = 'index' LOOP
    PERFORM kefu_gin_twin(command.objid);
  END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS kefu_gin_twins;
CREATE EVENT TRIGGER kefu_gin_twins ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION kefu_gin_twins_on_create_index();

DO $$
DECLARE
  existing record;
BEGIN
  FOR existing IN SELECT i.indexrelid
                    FROM pg_index i
                    JOIN pg_class c ON c.oid = i.indexrelid
                    JOIN pg_am am ON am.oid = c.relam
                   WHERE am.amname = 'btree' AND i.indexprs IS NOT NULL LOOP
    PERFORM kefu_gin_twin(existing.indexrelid);
  END LOOP;
END $$;
