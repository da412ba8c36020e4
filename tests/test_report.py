"""The run report's HTML builder on small hand-made inputs, opened in
headless chromium (tests/test_pipeline_e2e.py opens a real run's)."""

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import report_html
from tests import browser

CLASS_NAMES = ['cat', 'dog', 'bird']


def _statistics():
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=12)
    label = dataset.features.add()
    label.path.step.append('label')
    label.num_stats.common_stats.num_non_missing = 12
    label.num_stats.mean = 1.0
    label.num_stats.max = 2.0
    return stats


def _drift_anomalies():
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info['label']
    info.description = 'The Jensen-Shannon divergence is 0.5 (up to 0.3).'
    info.short_description = 'High Jensen-Shannon divergence'
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    return anomalies


def _everything():
    per_class = {
        label: {
            ('accuracy', 'candidate'): accuracy,
            ('example_count', 'candidate'): 4.0
        } for label, accuracy in enumerate((1.0, 0.75, 0.5))
    }
    return dict(
        class_names=CLASS_NAMES,
        statistics={
            'train': _statistics(),
            'eval': _statistics()
        },
        anomalies={'train': anomalies_pb2.Anomalies()},
        drift={
            'compared': True,
            'anomalies': [_drift_anomalies()]
        },
        trainer={
            'strategy': 'auto',
            'replicas': 1,
            'epoch_seconds': [1, 1],
            'history': {
                'loss': [1.0, 0.5],
                'accuracy': [0.5, 0.8],
                'val_loss': [1.1, 0.6],
                'val_accuracy': [0.4, 0.75]
            }
        },
        metrics={
            'overall': {
                ('accuracy', 'candidate'): 0.75,
                ('accuracy', 'baseline'): 0.8,
                ('accuracy', 'diff'): -0.05
            },
            'per_class': per_class
        },
        confusion=[[4, 0, 0], [1, 3, 0], [0, 2, 2]],
        blessing={
            'blessed': 0,
            'current_model': '/m/2',
            'baseline_model': '/m/1'
        },
        validation=['accuracy change against the baseline -0.0500 fails'],
        serving={
            'blessed': False,
            'reason': 'Predict failed: no signature'
        })


def _open(tmp_path, gathered, run=None):
    path = str(tmp_path / 'report.html')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(
            report_html.render('run-1', run or {'model': 'convnet'},
                               **gathered))
    return browser.Sections(browser.dump_dom(path))


def test_every_section_renders_with_class_names_and_figures(tmp_path):
    page = _open(tmp_path, _everything())
    assert list(page.text) == [key for key, _ in report_html.SECTIONS]
    # Per class by name, in label order.
    rows = page.tables['metrics-per-class']
    assert [row[0] for row in rows[1:]] == CLASS_NAMES
    assert rows[2][:4] == ['dog', '1', '0.75', '4']
    assert page.tables['confusion-table'][0][1:] == CLASS_NAMES
    assert page.tables['confusion-table'][3] == ['bird', '0', '2', '2']
    assert 'High Jensen-Shannon divergence' in page.text['drift']
    assert 'No anomalies found' in page.text['anomalies']
    assert page.tables['comparison-table'][1] == [
        'accuracy', '0.75', '0.8', '-0.05'
    ]
    assert 'not blessed' in page.text['comparison']
    assert 'refused' in page.text['serving']
    assert 'no signature' in page.text['serving']
    # Two training curves and the confusion matrix, laid out by the browser.
    assert page.figures == {'training': 2, 'confusion': 1}
    assert page.body['data-figures-shown'] == '3'


def test_a_run_where_nothing_after_the_data_ran_still_renders(tmp_path):
    nothing = dict(class_names=[],
                   statistics={},
                   anomalies={},
                   drift=None,
                   trainer=None,
                   metrics=None,
                   confusion=None,
                   blessing=None,
                   serving=None)
    page = _open(tmp_path, nothing)
    assert list(page.text) == [key for key, _ in report_html.SECTIONS]
    assert 'did not run' in page.text['serving']
    assert 'no blessing' in page.text['comparison']
    assert page.body['data-figures-shown'] == '0'
