"""The stack's image recipe filters (stack_images_source=build and registry); the logic is
the collection's plugins/module_utils/stack_images.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.stack_images import (
    stack_fleet_recipes,
    stack_image_lock_update,
    stack_image_locked,
    stack_image_plan,
    stack_image_push_name,
    stack_image_recipe,
    stack_image_ref,
    stack_image_repo_digest,
    stack_publish_todo,
)


class FilterModule:
    def filters(self):
        return {"stack_image_recipe": stack_image_recipe, "stack_image_ref": stack_image_ref,
                "stack_image_plan": stack_image_plan,
                "stack_image_push_name": stack_image_push_name,
                "stack_image_repo_digest": stack_image_repo_digest,
                "stack_image_locked": stack_image_locked,
                "stack_publish_todo": stack_publish_todo,
                "stack_image_lock_update": stack_image_lock_update,
                "stack_fleet_recipes": stack_fleet_recipes}
