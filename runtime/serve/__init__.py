"""Operating jobs as a service: `sleipnir serve` (`service.Service` with its scheduler loop, trigger watchers,
HTTP app and job runner), cron schedules (`schedule.py`), triggers and conditions (`triggers.py`), alerts
(`alerts.py`), metrics (`metrics.py`) and logs (`logs.py`). `run-job` uses the alerts, metrics and logs too.
"""
