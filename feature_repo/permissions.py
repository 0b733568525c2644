"""Feast permissions: who may read which features. Author features are personal data (pseudonymous ids).

Objects tagged ``pii`` (and the data sources of tagged views) are readable only with the ``skewless-pii-reader``
role; every other view and service is readable online by the predictor and offline by training. Describing the
registry (names, schemas) is open to every skewless role; changing it, materializing and writing need
``skewless-platform``. A request no permission matches is denied (Feast's default).

Enforcement is Feast's: its feature, offline and registry servers check these permissions for the identity of the
caller (``auth`` in ``feature_store.yaml``: ``kubernetes`` maps service accounts to roles, ``oidc`` the token's
roles). An in-process SDK client holding the online store's own credentials is not checked by Feast: the predictor
therefore runs with credentials that only the non-PII keys need, or reads through the feature server.

Names come from the declared objects (derived, never written twice). Watch out, Feast 0.67: a permission's
``required_tags`` is compared with a resource attribute that feature views do not have, so it matches every
resource; these permissions select by name instead.
"""

import re

from feast import FeatureService, FeatureView
from feast.data_source import DataSource
from feast.entity import Entity
from feast.feast_object import ALL_RESOURCE_TYPES
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.permissions.action import ALL_ACTIONS, READ, AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy

import author_features
import entities
import feature_services
import repo_features
import sources

PLATFORM_ROLE = "skewless-platform"
PREDICTOR_ROLE = "skewless-predictor"
TRAINER_ROLE = "skewless-trainer"
PII_READER_ROLE = "skewless-pii-reader"
PII_TAG = "pii"

_DECLARED = [obj for module in (entities, sources, repo_features, author_features, feature_services)
             for obj in vars(module).values()
             if isinstance(obj, (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService))]
_PII_VIEWS = [o for o in _DECLARED if isinstance(o, FeatureView) and PII_TAG in o.tags]
#: Names of everything personal data can be read through: tagged objects and the sources of tagged views.
PII_NAMES = sorted({o.name for o in _DECLARED if PII_TAG in o.tags} | {v.batch_source.name for v in _PII_VIEWS})
#: Names of the readable objects that carry no personal data.
OPEN_NAMES = sorted({o.name for o in _DECLARED if not isinstance(o, Entity)} - set(PII_NAMES))
_READABLE = [FeatureView, OnDemandFeatureView, FeatureService, DataSource]


def _exactly(names: list[str]) -> list[str]:
    """Name patterns matching exactly these names (Feast treats an empty list as "every name": refuse it)."""
    if not names:
        raise ValueError("a permission over no object would match every object")
    return [re.escape(n) for n in names]


platform_admin = Permission(
    name="platform_admin",
    types=ALL_RESOURCE_TYPES,
    actions=ALL_ACTIONS,
    policy=RoleBasedPolicy(roles=[PLATFORM_ROLE]),
)

describe_registry = Permission(
    name="describe_registry",
    types=ALL_RESOURCE_TYPES,
    actions=[AuthzedAction.DESCRIBE],
    policy=RoleBasedPolicy(roles=[PREDICTOR_ROLE, TRAINER_ROLE, PII_READER_ROLE]),
)

online_reads = Permission(
    name="non_pii_online_reads",
    types=_READABLE,
    name_patterns=_exactly(OPEN_NAMES),
    actions=[AuthzedAction.READ_ONLINE],
    policy=RoleBasedPolicy(roles=[PREDICTOR_ROLE]),
)

offline_reads = Permission(
    name="non_pii_offline_reads",
    types=_READABLE,
    name_patterns=_exactly(OPEN_NAMES),
    actions=[AuthzedAction.READ_OFFLINE],
    policy=RoleBasedPolicy(roles=[TRAINER_ROLE]),
)

pii_reads = Permission(
    name="pii_reads",
    types=_READABLE,
    name_patterns=_exactly(PII_NAMES),
    actions=READ,
    policy=RoleBasedPolicy(roles=[PII_READER_ROLE]),
)
