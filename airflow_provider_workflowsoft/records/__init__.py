"""Durable records that keep Workflowsoft work from being lost or done twice.

* :mod:`.claims` - which integration instances a task instance has received and not completed yet;
* :mod:`.creates` - the idempotency record of each process start and task creation;
* :mod:`.stores` - where records live (Airflow Variables, Airflow 3.3's task-state store, memory);
* :mod:`.naming` - the one way a task instance is named in records (owner, record keys).

This layer imports Airflow only inside the store adapters, when a record is read or written.
"""
