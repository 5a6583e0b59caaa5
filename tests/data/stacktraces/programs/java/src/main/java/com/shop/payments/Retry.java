package com.shop.payments;

import java.util.function.IntSupplier;

/** Retries payment calls; gives up with its own error. */
public final class Retry {
    private final int attempts;

    public Retry(int attempts) {
        this.attempts = attempts;
    }

    public int charge(String body) {
        GatewayException last = null;
        for (int i = 0; i < attempts; i++) {
            try {
                return Api.charge(body);
            } catch (GatewayException e) {
                last = e;
            }
        }
        throw new IllegalStateException("gave up after " + attempts + " attempts", last);
    }

    /** Runs through a lambda, so the trace has synthetic lambda frames. */
    public int validateLater(int amount) {
        IntSupplier check = () -> Api.validate(amount);
        return check.getAsInt();
    }
}
