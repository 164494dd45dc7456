"""Quality checks, pipeline metrics, scorecards, freshness and lag monitoring."""
