package com.shop.payments;

/** The payment API client: parses gateway replies (fails inside Integer.parseInt). */
public final class Api {
    private Api() {}

    static int parseAmount(String body) {
        return Integer.parseInt(body.trim()); // throws NumberFormatException inside java.lang
    }

    public static int charge(String body) throws GatewayException {
        try {
            return parseAmount(body);
        } catch (NumberFormatException e) {
            throw new GatewayException("unreadable gateway reply", e);
        }
    }

    /** Thrown by the program's own code, no cause. */
    public static int validate(int amount) {
        if (amount <= 0) {
            throw new IllegalArgumentException("amount must be positive, got " + amount);
        }
        return amount;
    }
}
