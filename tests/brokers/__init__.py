"""The broker contract suite: what every queue source must do, over a real broker.

:mod:`brokers.contract` holds the contract (one test class, :class:`BrokerContract`); each
broker has a module ``test_<broker>.py`` with a subclass that provides the broker (a
:class:`brokers.contract.Broker`). A broker is not done until its subclass passes.
"""
