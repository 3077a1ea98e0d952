"""moto_server, with three costs that grow with the data made proportional
to the request instead (TransactWriteItems' rollback backup, a table
Query's search for its partition, the search for the message an SQS
receipt handle deletes) and one race closed (two SQS receives taking one
message).

moto (5.x) deep-copies every table a TransactWriteItems touches before it
runs the transaction, so that it can put the tables back if a condition
fails. An event store's change-sets table grows with every append, and so
does the cost of each append: 1,600 appends to one table took about an
hour. Here the backup is a copy of the table's item index (references to
the same items) in which only the partitions and items the transaction
names are copies. A transaction can change no other item, so putting this backup
back leaves the tables exactly as moto's own backup would. Everything else
is moto's own code, run as `moto_server` with the same arguments.

moto's SQS deletes a message by walking the whole queue twice and copying
it, for every receipt handle: 20,000 messages took minutes to delete. Here
the walk stops at the message that had the handle (usually near the front,
since the oldest messages are handled first) and removes it in place; the
outcome is the same.

moto's DynamoDB Query on a table (not an index) sorts every item of the
table and then keeps those with the asked hash key: an event store's
change sets table has thousands of items, and reads of one aggregate took
most of the server's time in the event store's concurrency test. Here such
a query gets its own partition's items, sorted the same way; the results
are the same.

moto's SQS receive checks that a message is visible and then marks it
received, with no lock between the two, and the server answers each request
on a thread of its own: two concurrent receives (an agent's pollers) now and
then both take the same message, which real SQS does only rarely. A bare
moto_server handed 2 of 2,000 messages out twice to four or sixteen boto3
threads receiving with a 300-second visibility timeout. Here a lock makes
each receive's pass over the queue whole; a long poll waits outside it.
"""

import copy
import inspect
import sys
import threading
import time
from collections import defaultdict

from moto.dynamodb import models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.server import main
from moto.sqs import models as sqs_models

_current = threading.local()


def _touched_keys(table, table_name, transact_items):
    """The (hash, range) keys of the items `transact_items` write in `table`."""
    for entry in transact_items:
        for op_type, op in entry.items():
            if op.get("TableName") != table_name:
                continue
            attrs = op.get("Item") if op_type == "Put" else op.get("Key")
            if not attrs or table.hash_key_attr not in attrs:
                continue
            hash_value = DynamoType(attrs[table.hash_key_attr])
            range_value = None
            if table.range_key_attr is not None and table.range_key_attr in attrs:
                range_value = DynamoType(attrs[table.range_key_attr])
            yield hash_value, range_value


def _backup(table, transact_items):
    """A table whose item index can replace `table`'s after a rollback."""
    backup = copy.copy(table)
    # A copy of a dict reuses its keys' hashes: no DynamoType is hashed.
    backup.items = defaultdict(dict, table.items)
    for hash_value, range_value in _touched_keys(table, table.name, transact_items):
        if hash_value not in table.items:
            continue
        if table.has_range_key:
            # Only touched partitions change: they get their own index.
            if backup.items[hash_value] is table.items[hash_value]:
                backup.items[hash_value] = dict(table.items[hash_value])
            if range_value is not None and range_value in table.items[hash_value]:
                backup.items[hash_value][range_value] = copy.deepcopy(table.items[hash_value][range_value])
        else:
            backup.items[hash_value] = copy.deepcopy(table.items[hash_value])
    return backup


class _CopyModule:
    """`copy` as moto's DynamoDB backend sees it: tables backed up by
    `_backup` while a transaction is being set up, all else unchanged."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        transact_items = getattr(_current, "transact_items", None)
        if transact_items is not None and isinstance(value, Table):
            return _backup(value, transact_items)
        return copy.deepcopy(value, memo)


_original_transact_write_items = models.DynamoDBBackend.transact_write_items


def _transact_write_items(self, transact_items):
    _current.transact_items = transact_items
    try:
        return _original_transact_write_items(self, transact_items)
    finally:
        _current.transact_items = None


models.copy = _CopyModule()
models.DynamoDBBackend.transact_write_items = _transact_write_items

_original_query = Table.query
_query_signature = inspect.signature(_original_query)
_original_all_items = Table.all_items


def _query(self, *args, **kwargs):
    arguments = _query_signature.bind(self, *args, **kwargs).arguments
    if arguments.get("index_name") is None and arguments.get("hash_key") is not None:
        _current.query_hash_key = arguments["hash_key"]
    try:
        return _original_query(self, *args, **kwargs)
    finally:
        _current.query_hash_key = None


def _all_items(self):
    """Every item, or while a table query runs only its hash key's (which
    is all that query keeps of them), in moto's order."""
    hash_key = getattr(_current, "query_hash_key", None)
    if hash_key is None:
        return _original_all_items(self)
    # `get`: `items` is a defaultdict, and a lookup must not add a partition.
    partition = self.items.get(hash_key)
    if partition is None:
        return []
    items = list(partition.values()) if self.range_key_attr else [partition]
    return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


Table.query = _query
Table.all_items = _all_items


def _delete_message(self, receipt_handle):
    if receipt_handle in self.deleted_messages:
        # Already deleted: moto answers a second delete gracefully.
        return
    for position, message in enumerate(self._messages):
        if message.had_receipt_handle(receipt_handle):
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            del self._messages[position]
            return
    raise sqs_models.ReceiptHandleIsInvalid()


sqs_models.Queue.delete_message = _delete_message

_receive_lock = threading.Lock()
_original_receive_message = sqs_models.SQSBackend.receive_message


def _receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
    polling_end = time.monotonic() + wait_seconds_timeout
    while True:
        with _receive_lock:
            result = _original_receive_message(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        remaining = polling_end - time.monotonic()
        if result or remaining <= 0:
            return result
        # Returns at once while visible messages are held back (a FIFO
        # group in flight): the short sleep keeps that from spinning.
        self.get_queue(queue_name).wait_for_messages(min(remaining, 1))
        time.sleep(0.005)


sqs_models.SQSBackend.receive_message = _receive_message

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
