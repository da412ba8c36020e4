"""Drift between spans, found with TFDV's comparators, reported by feature."""

import pandas as pd
import tensorflow_data_validation as tfdv

from components import data_gate


def _statistics(labels, lengths):
    return tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({
            'label': labels,
            'length': lengths
        }))


def test_drift_is_reported_by_feature_beyond_the_threshold():
    previous = _statistics([0, 1, 2, 3] * 50, [10, 11, 12, 13] * 50)
    same = _statistics([0, 1, 2, 3] * 40, [10, 11, 12, 13] * 40)
    shifted = _statistics([0] * 180 + [1] * 20, [10, 11, 12, 13] * 50)
    schema = tfdv.infer_schema(previous)

    assert not data_gate.drift_anomalies(schema, same, previous,
                                         0.1).anomaly_info
    drifted = data_gate.drift_anomalies(schema, shifted, previous, 0.1)
    assert set(drifted.anomaly_info) == {'label'}
    assert 'Jensen-Shannon' in drifted.anomaly_info['label'].description
    # A looser bound tolerates the same shift.
    assert not data_gate.drift_anomalies(schema, shifted, previous,
                                         0.9).anomaly_info
