"""The model files each enabled service needs on the host (tasks/models.yml); the logic is
the collection's plugins/module_utils/stack_models.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.stack_models import (
    model_files,
    model_problems,
)


class FilterModule:
    def filters(self):
        return {"kokoro_stack_model_files": model_files,
                "kokoro_stack_model_problems": model_problems}
