"""Email through a real SMTP server (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from kefu_notifier.domain.catalogue import ChannelKind
from kefu_notifier.domain.ports import OutgoingMessage, ProviderError, SendReceipt
from kefu_notifier.domain.signature import DELIVERY_ID_HEADER


class SmtpEmailSender:
    channel = ChannelKind.EMAIL

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        security: str = "starttls",
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username or None
        self._password = password or None
        self._security = security
        self._timeout = timeout

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.address
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        # Derived from the delivery id: a resend after a crash carries the same Message-ID,
        # which mail systems use to collapse duplicates.
        mail["Message-ID"] = f"<{message.delivery_id}@kefu.notifier>"
        mail[DELIVERY_ID_HEADER] = message.delivery_id
        mail["Content-Language"] = message.language
        mail.set_content(message.body)
        try:
            _, reply = await aiosmtplib.send(
                mail,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                use_tls=self._security == "tls",
                start_tls=self._security == "starttls",
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise ProviderError(f"recipient refused: {exc}", retryable=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the server's final word on this message; 4xx says "try later".
            raise ProviderError(
                f"SMTP {exc.code}: {exc.message}", retryable=exc.code < 500
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ProviderError(f"SMTP unavailable: {exc!r}", retryable=True) from exc
        return SendReceipt(provider_message_id=mail["Message-ID"] or reply or None)
