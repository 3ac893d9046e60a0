"""nio's encryption store, without a write transaction on every sync.

nio saves the set of encrypted rooms after each sync, even when no room is new: a read of the
account and a committed transaction, in sqlite, on the event loop, every time. Rooms already
saved are skipped here, so a sync that brings nothing new costs no database work."""

from __future__ import annotations

from collections.abc import Iterable

from nio.store import DefaultStore


class CryptoStore(DefaultStore):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._saved_rooms: set[str] | None = None  # read from the store at the first save

    def save_encrypted_rooms(self, rooms: Iterable[str]) -> None:
        if self._saved_rooms is None:
            self._saved_rooms = set(self.load_encrypted_rooms())
        new = set(rooms) - self._saved_rooms
        if new:
            super().save_encrypted_rooms(new)
            self._saved_rooms |= new

    def delete_encrypted_room(self, room: str) -> None:
        super().delete_encrypted_room(room)
        if self._saved_rooms is not None:
            self._saved_rooms.discard(room)
