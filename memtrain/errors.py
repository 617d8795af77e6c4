"""One error type for bad input, so every message names the file, the record and the field at fault."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input (config, data file, model path) that a user can fix; raised with its location spelled out."""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike | None = None,
        record: str | int | None = None,
        field: str | None = None,
    ) -> None:
        where = [
            f"{label} {value}"
            for label, value in (("file", file), ("record", record), ("field", field))
            if value is not None
        ]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.file, self.record, self.field = file, record, field
