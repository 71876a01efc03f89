"""A tiny order-processing service: the program the demo debugs.

It runs worker threads that price orders in a loop, the way a production service
would, and was written without any debugger in mind.
"""

import threading
import time

PRICES = {"apple": 3, "pear": 4, "plum": 2}


def price(order):
    subtotal = PRICES[order["item"]] * order["quantity"]
    discount = 0.1 * subtotal if order["quantity"] >= 10 else 0.0  # DEMO: discount line
    return subtotal - discount


def worker(name, orders, results):
    for number in range(orders):
        order = {"id": f"{name}-{number}", "item": list(PRICES)[number % 3], "quantity": number % 13}
        results.append(price(order))
        time.sleep(0.002)


def main():
    results = []
    threads = [threading.Thread(target=worker, args=(f"w{k}", 400, results), name=f"worker-{k}") for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"processed {len(results)} orders, revenue {sum(results):.2f}", flush=True)


if __name__ == "__main__":
    main()
