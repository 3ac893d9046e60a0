"""The device's standing: its keys match what the homeserver publishes, its owner's identity
signs it, and the room keys it receives are backed up. Failures here leave the bot working
(only less trusted), except a store that does not match its device, which stops start-up."""

from __future__ import annotations

import logging

from nio import AsyncClient

from bot import paths
from bot.config import Settings
from bot.core.stores import CryptoBookkeeping
from bot.matrix.cross_signing import CrossSigning, CrossSigningError, Identity, published_device
from bot.matrix.device_store import RECOVERY, StoreProblem
from bot.matrix.key_backup import BackupError, KeyBackup

log = logging.getLogger(__name__)


class DeviceTrust:
    def __init__(self, settings: Settings, client: AsyncClient, crypto: CryptoBookkeeping) -> None:
        self.settings = settings
        self.client = client
        self.identity_path = paths.cross_signing(settings.data_dir)
        self.backup: KeyBackup | None = None
        if settings.matrix.encryption and settings.matrix.key_backup:
            self.backup = KeyBackup(
                client,
                crypto,
                paths.key_backup(settings.data_dir),
                settings.matrix.homeserver,
                settings.matrix.request_timeout_s,
            )

    def _key_service(self) -> CrossSigning:
        matrix = self.settings.matrix
        olm = self.client.olm
        return CrossSigning(
            matrix.homeserver,
            self.client.user_id,
            self.client.device_id,
            self.client.access_token,
            matrix.password.get_secret_value() if matrix.password else None,
            matrix.request_timeout_s,
            # what the homeserver returns for this device is signed only if it is these keys
            own_keys=dict(olm.account.identity_keys) if olm is not None else None,
        )

    async def check_device_keys(self) -> None:
        """Upload the device keys once; afterwards they must match the published ones."""
        olm = self.client.olm
        assert olm is not None
        device_id = self.client.device_id
        service = self._key_service()
        try:
            published = await service.published_keys()
        except CrossSigningError as exc:
            log.warning("could not read the published device keys: %s", exc)
            published = {}
        finally:
            await service.aclose()
        device = published_device(published, self.client.user_id, device_id)
        if device is not None:
            keys = device.get("keys")
            theirs = keys.get(f"ed25519:{device_id}") if isinstance(keys, dict) else None
            if theirs != olm.account.identity_keys["ed25519"]:
                raise StoreProblem(
                    f"the encryption store does not hold the keys device {device_id} published"
                    f" (the store was replaced or recreated): {RECOVERY}"
                )
        if self.client.should_upload_keys:
            await self.client.keys_upload()

    async def cross_sign(self) -> None:
        """Clients that refuse devices their owner has not verified trust a signed bot device."""
        service = self._key_service()
        try:
            master = await service.ensure(self.identity_path)
            log.info("device %s is cross-signed (master key %s)", self.client.device_id, master)
        except CrossSigningError as exc:
            # the bot still works; clients will just show its device as unverified
            log.error("cross-signing: %s", exc)
        finally:
            await service.aclose()

    async def start_backup(self) -> None:
        if self.backup is None:
            return
        try:
            identity = None
            if self.settings.matrix.cross_signing:
                identity = Identity.load(self.identity_path)
            await self.backup.start(identity.master if identity else None)
            await self.backup.upload_new()
        except (BackupError, CrossSigningError) as exc:
            log.error("key backup off: %s", exc)
            self.backup = None

    async def back_up_new_keys(self) -> None:
        if self.backup is not None:
            await self.backup.upload_new()
