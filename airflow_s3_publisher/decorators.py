"""``@task.s3_publish``: write output in a TaskFlow function, publish it from the same worker."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from inspect import signature
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from airflow_s3_publisher.cancel import Cancellation
from airflow_s3_publisher.links import PublishedResultLink
from airflow_s3_publisher.operators import PUBLISH_TEMPLATE_FIELDS, PublishingTask
from airflow_s3_publisher.settings import PublishSettings

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator

OUTPUT_DIR_ARG = "output_dir"


class _S3PublishDecoratedOperator(PublishingTask, DecoratedOperator, PythonOperator):
    """Runs the function with an empty ``output_dir``, then publishes what it left there."""

    custom_operator_name = "@task.s3_publish"
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs", *PUBLISH_TEMPLATE_FIELDS)
    template_fields_renderers = {"op_args": "py", "op_kwargs": "py", "publisher": "json"}
    operator_extra_links = (PublishedResultLink(),)

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Publish settings (PublishSettings' and ObjectOptions' fields) come as keyword arguments of the
        # decorator, or from default_args, which Airflow hands over whole.
        defaults = kwargs.get("default_args") or {}
        given = {name: value for name, value in defaults.items() if PublishSettings.accepts(name)}
        given.update({name: kwargs.pop(name) for name in list(kwargs) if PublishSettings.accepts(name)})
        op_kwargs = dict(op_kwargs or {})
        self._wants_output_dir = OUTPUT_DIR_ARG in signature(python_callable).parameters
        if self._wants_output_dir:
            # A stand-in so the call validates at parse time; the real directory comes at run time.
            op_kwargs.setdefault(OUTPUT_DIR_ARG, None)
        super().__init__(
            kwargs_to_upstream={"python_callable": python_callable, "op_args": op_args, "op_kwargs": op_kwargs},
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )
        self._init_publish_settings(given, asset_alias)

    def execute(self, context: Context) -> Any:
        self.cancellation = Cancellation(self.log)  # on_kill while the function runs: the publish never starts
        output_dir = Path(tempfile.mkdtemp(prefix=f"s3publish-{self.task_id}-"))
        try:
            if self._wants_output_dir:
                self.op_kwargs = {**self.op_kwargs, OUTPUT_DIR_ARG: str(output_dir)}
            returned = super().execute(context)
            if isinstance(returned, (str, os.PathLike)):
                source = os.fspath(returned)
            elif returned is None:
                source = str(output_dir)
            else:
                raise TypeError(
                    f"a @task.s3_publish function returns None (publish output_dir) or a path to publish, "
                    f"not {type(returned).__name__}"
                )
            self.source = source
            return self._publish(source, context, self.log)
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)

    def on_kill(self) -> None:
        """Airflow stops the task: abort every multipart upload in flight (see S3PublishOperator.on_kill)."""
        self._cancel_publish(self.task_id, self.log)
        super().on_kill()


def s3_publish_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function into a task that publishes its output to S3 when it returns.

    The function may take an ``output_dir`` argument: an empty local directory on the worker, removed
    afterwards. What the function writes there is published (or, if it returns a path, that path).
    The task returns the PublishedResult dict. Accepts every setting of
    :class:`~airflow_s3_publisher.S3PublishOperator` except ``source``::

        @task.s3_publish(bucket="my-bucket", key="reports/{jobID}", compress=True)
        def report(output_dir: str) -> None:
            Path(output_dir, "report.csv").write_text("...")
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=_S3PublishDecoratedOperator,
        **kwargs,
    )
