"""collector.pipelines."""
