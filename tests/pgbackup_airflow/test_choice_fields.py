"""A templated choice field (the capture's kind, retention's target) is only known when the task runs: anything
else is refused there, naming what is allowed."""

import pytest
from airflow.sdk.exceptions import AirflowException

from pgbackup_airflow.operators import require_one_of

pytestmark = pytest.mark.unit


def test_an_allowed_choice_passes():
    require_one_of("kind", "incremental", ("full", "incremental"))


def test_anything_else_is_refused_naming_the_choices():
    with pytest.raises(AirflowException, match=r"^kind must be 'full' or 'incremental', not 'weekly'$"):
        require_one_of("kind", "weekly", ("full", "incremental"))
