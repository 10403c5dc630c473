"""On PostgreSQL the database itself refuses UPDATE and DELETE on the audit log.

The ORM already refuses them (``AuditLogQuerySet``); the trigger also stops raw SQL and any
future code path that bypasses the ORM. SQLite (embedded mode) relies on the ORM guard alone.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

_CREATE = """
CREATE OR REPLACE FUNCTION wedsync_audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER wedsync_audit_log_append_only
    BEFORE UPDATE OR DELETE ON wedsync_auditlog
    FOR EACH ROW EXECUTE FUNCTION wedsync_audit_log_append_only();
"""

_DROP = """
DROP TRIGGER IF EXISTS wedsync_audit_log_append_only ON wedsync_auditlog;
DROP FUNCTION IF EXISTS wedsync_audit_log_append_only();
"""


def _create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_CREATE, params=None)


def _drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("wedsync", "0001_initial")]

    operations = [migrations.RunPython(_create, _drop)]
