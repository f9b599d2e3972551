"""The model: batches in, fleet / series / alarms / rates out; the default plot series."""
from __future__ import annotations

import pytest

import recorded_nist as testing
from desktop.core.machines import MachineStatus
from desktop.core.model import MonitorModel, RateMeter


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def recorded(devices, name: str, file_name: str, last_line: int | None = None):
    device = testing.device_named(devices, name)
    return [o for _, o in testing.shdr_observations(testing.nist_shdr(file_name), device, last_line=last_line)]


def test_default_plot_is_the_first_machine_by_name_with_spindle_speed_data(devices):
    model = MonitorModel()
    hurcos = [o for d in devices if d["device_name"].startswith("Hurco")
              for o in testing.unavailable_observations(d, "2016-11-16T20:00:00Z")]
    gf = recorded(devices, "GFAgie01", "GFAgie01-20160513-20160514.txt", 2000)
    mazak03 = recorded(devices, "Mazak03", "Mazak03-20161116-20161117.txt")
    model.apply(testing.batch_of(devices, hurcos + gf + mazak03))
    # Hurco has a ROTARY_VELOCITY item but only UNAVAILABLE; GFAgie01 has none.
    assert model.default_series() == ("mtc_adapter004", "Mazak03-S_2")
    mazak01 = recorded(devices, "Mazak01", "Mazak01-20171030-20171031.txt", 20000)
    model.apply(testing.batch_of(observations=mazak01))
    key = model.default_series()
    assert key[0] == "mtc_adapter002"
    assert model.data_item(*key)["type"] == "ROTARY_VELOCITY"


def test_without_spindle_speed_data_the_first_numeric_series_is_plotted(devices):
    model = MonitorModel()
    gf = recorded(devices, "GFAgie01", "GFAgie01-20160513-20160514.txt", 2000)
    model.apply(testing.batch_of(devices, gf))
    key = model.default_series()
    assert key is not None and key[0] == "mtc_adapter001"
    numeric_items = [i["id"] for i in model.sample_items("mtc_adapter001") if model.has_data(("mtc_adapter001", i["id"]))]
    assert key[1] == numeric_items[0]


def test_apply_updates_everything_and_reports_notifications(devices):
    model = MonitorModel()
    observations = recorded(devices, "Mazak03", "Mazak03-20161116-20161117.txt")
    update = model.apply(testing.batch_of(devices, observations), now=1000.0)
    assert update.devices_changed and update.observation_count == len(observations)
    assert len(model.fleet) == 8
    assert {a.native_code for a in update.notifications} == {"791", "711"}
    assert len(model.journal) == len([e for e in update.alarm_events if e.kind == "raised"])
    assert model.last_data_at == 1000.0 and model.last_observation_timestamp == observations[-1]["timestamp"]
    assert [i["name"] for i in model.sample_items("mtc_adapter004")][:3] == ["Xabs", "Xload", "Xfrt"]
    assert model.rate.rate(1000.0) == pytest.approx((8 + len(observations)) / model.rate.window_seconds)


def test_history_read_at_start_only_pops_up_faults_still_active(devices):
    import dataclasses

    observations = recorded(devices, "Mazak03", "Mazak03-20161116-20161117.txt")
    history = dataclasses.replace(testing.batch_of(devices, observations), catching_up=True)
    update = MonitorModel().apply(history)
    assert update.notifications == ()  # every recorded fault of that day was cleared again
    assert len(update.alarm_events) > 0
    fault_at = next(i for i, o in enumerate(observations) if o.get("level") == "FAULT")
    still_active = dataclasses.replace(testing.batch_of(devices, observations[: fault_at + 1]), catching_up=True)
    assert [a.native_code for a in MonitorModel().apply(still_active).notifications] == ["791"]


def test_reset_forgets_state_but_not_the_journal(devices):
    model = MonitorModel()
    model.apply(testing.batch_of(devices, recorded(devices, "Mazak03", "Mazak03-20161116-20161117.txt")))
    rows = len(model.journal)
    model.reset()
    assert len(model.fleet) == 0 and len(model.series) == 0 and len(model.journal) == rows
    assert model.fleet.view("mtc_adapter004") is None


def test_offline_until_data_arrives(devices):
    model = MonitorModel()
    model.apply(testing.batch_of(devices))
    assert {v.status for v in model.fleet.views()} == {MachineStatus.OFFLINE}


def test_rate_meter_window():
    meter = RateMeter(window_seconds=5.0)
    meter.add(500, now=100.0)
    meter.add(500, now=102.0)
    assert meter.rate(103.0) == 200.0
    assert meter.rate(106.0) == 100.0
    assert meter.rate(200.0) == 0.0
