"""Entities of skewless: a repository and a (pseudonymous) commit author."""

from feast import Entity, ValueType

repo = Entity(
    name="repo",
    join_keys=["repo"],
    value_type=ValueType.STRING,
    description="A source repository, as GitHub owner/name.",
    owner="platform@skewless.dev",
    tags={"domain": "activity"},
)

author = Entity(
    name="author",
    join_keys=["author_id"],
    value_type=ValueType.STRING,
    description="A commit author: 'a_' + 12 hex of sha256 of the lower-cased e-mail. Pseudonymous personal data.",
    owner="platform@skewless.dev",
    tags={"domain": "activity", "pii": "pseudonymous"},
)
