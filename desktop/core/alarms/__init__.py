"""Alarms: rules, the engine that applies them, the journal, KPIs and shared acknowledgements.

The engine (`engine.py`) turns observations into alarm transitions under the rules of a
rules file (`rules.py`); the journal (`journal.py`) stores every transition; `kpis.py` measures
the alarm system from the journal; `acks.py` shares acknowledgements and shelving between
stations through Kafka, and `reader.py` reads what other stations shared. No Qt anywhere here.
"""
from desktop.core.alarms.engine import AlarmEngine
from desktop.core.alarms.journal import AlarmJournal, JournalEntry, default_journal_path
from desktop.core.alarms.model import (
    ACKNOWLEDGED,
    ACTIVE,
    CLEARED,
    CLEAREDEVENT,
    ESCALATED,
    MARKED_STALE,
    RAISED,
    RELEVELED,
    REMOVED_FROM_SERVICE,
    RETURNED_TO_SERVICE,
    SHELVED,
    UNSHELVED,
    Alarm,
    AlarmEvent,
    AlarmState,
    Notice,
    alarm_id,
)
from desktop.core.alarms.reader import AckReader
from desktop.core.alarms.rules import Rule, RuleSet, RulesError, default_rules_path, load_rules, parse_rules

__all__ = [
    "ACKNOWLEDGED", "ACTIVE", "AckReader", "CLEARED", "CLEAREDEVENT", "ESCALATED", "MARKED_STALE", "RAISED", "RELEVELED",
    "REMOVED_FROM_SERVICE", "RETURNED_TO_SERVICE", "SHELVED", "UNSHELVED", "Alarm", "AlarmEngine", "AlarmEvent",
    "AlarmJournal", "AlarmState", "JournalEntry", "Notice", "Rule", "RuleSet", "RulesError", "alarm_id",
    "default_journal_path", "default_rules_path", "load_rules", "parse_rules",
]
