"""Give the existing Coordinators group the conflict inbox and the strategy inline.

``coordinator_group_ensure`` grants these to the group when a coordinator is added; a deployment
whose coordinators were all added before shared records existed would otherwise lack them until then.
"""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

COORDINATORS_GROUP = "Coordinators"  # wedsync.services.agencies.COORDINATORS_GROUP, frozen here
GRANTS = (("conflict", ("view", "change")), ("weddingstrategy", ("view", "add", "change", "delete")))


def _permissions(apps: Apps) -> list[object]:
    codenames = [f"{action}_{model}" for model, actions in GRANTS for action in actions]
    permission = apps.get_model("auth", "Permission")
    return list(permission.objects.filter(content_type__app_label="records", codename__in=codenames))


def grant(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    group = apps.get_model("auth", "Group").objects.filter(name=COORDINATORS_GROUP).first()
    if group is None:
        return  # no coordinator yet: the first one's group is made with these
    # Permissions are created after every migration has run; this one needs them now.
    records = apps.get_app_config("records")
    previous = getattr(records, "models_module", None)
    records.models_module = True  # create_permissions skips an app it thinks has no models
    try:
        create_permissions(records, apps=apps, verbosity=0)
    finally:
        records.models_module = previous
    group.permissions.add(*_permissions(apps))


def revoke(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    group = apps.get_model("auth", "Group").objects.filter(name=COORDINATORS_GROUP).first()
    if group is not None:
        group.permissions.remove(*_permissions(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("records", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
