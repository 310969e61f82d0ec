"""What a task does: scan, change detection, backup pipeline, restore, browse."""
