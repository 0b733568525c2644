"""Entities of skewless: a repository and a (pseudonymous) commit author."""

from feast import Entity, ValueType

from skewless.features.definitions import AUTHOR_ACTIVITY, REPO_ACTIVITY

repo = Entity(
    name="repo",
    join_keys=[REPO_ACTIVITY.entity_key],
    value_type=ValueType.STRING,
    description="A source repository, as GitHub owner/name.",
    owner="platform@skewless.dev",
    tags={"domain": "activity"},
)

author = Entity(
    name="author",
    join_keys=[AUTHOR_ACTIVITY.entity_key],
    value_type=ValueType.STRING,
    description="A commit author: 'a_' + 12 hex of sha256 of the lower-cased e-mail. Pseudonymous personal data.",
    owner="platform@skewless.dev",
    tags={"domain": "activity", "pii": "pseudonymous"},
)
