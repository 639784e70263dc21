"""The optional monthly token quota (MEMLAYER_MONTHLY_TOKEN_QUOTA): calendar months in UTC."""

from datetime import date, datetime, timezone

from memlayer.web.errors import TooManyRequests


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


def period_of(now: datetime) -> date:
    """The first day of the month `now` falls in: the key of its usage counter."""
    return now.date().replace(day=1)


def period_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of `now`'s month."""
    first = period_of(now)
    return datetime(first.year, first.month, 1, tzinfo=timezone.utc)


def next_period(now: datetime) -> datetime:
    """When the quota of `now`'s month renews."""
    first = period_of(now)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return datetime(following.year, following.month, 1, tzinfo=timezone.utc)


def exceeded(quota: int, now: datetime) -> TooManyRequests:
    """The 429 answer for a user whose monthly tokens are used up, with Retry-After at the renewal."""
    renews = next_period(now)
    return TooManyRequests(
        f"Monthly token quota of {quota} tokens used up; it renews at {renews:%Y-%m-%dT%H:%M:%SZ}.",
        retry_after_seconds=int((renews - now).total_seconds()) + 1,
    )


def check(tokens_used: int, quota: int | None, now: datetime) -> None:
    """Before asking the model: refuse a user who already reached the quota."""
    if quota is not None and tokens_used >= quota:
        raise exceeded(quota, now)
